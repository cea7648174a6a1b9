//! Unit tests of tabular training, on small tables built in the test.

use super::read::split_fields;
use super::*;

fn opts(label: &str) -> TableOptions {
    TableOptions {
        folds: 2,
        alphas: vec![1.0],
        max_iterations: 1000,
        tolerance_per_row: 1e-10,
        ..TableOptions::new("table.csv", label)
    }
}

fn train(text: &str, o: &TableOptions) -> Result<TableReport, TableError> {
    train_bytes(
        "table.csv",
        "table.csv",
        text.as_bytes(),
        o,
        Millis::from_unix_millis(1_700_000_000_000),
    )
}

/// `n` rows of `row(i)` under `header`, CRLF line ends.
fn table(header: &str, n: usize, row: impl Fn(usize) -> String) -> String {
    let mut t = format!("{header}\r\n");
    for i in 0..n {
        t.push_str(&row(i));
        t.push_str("\r\n");
    }
    t
}

/// A learnable table: x is high for positives, with overlap.
fn learnable(n: usize) -> String {
    table("x,colour,y", n, |i| {
        let pos = i % 3 == 0;
        let x = if pos { 5 + i % 4 } else { i % 6 };
        let colour = ["red", "blue"][i % 2];
        format!("{x},{colour},{}", if pos { "yes" } else { "no" })
    })
}

#[test]
fn labels_are_read_in_any_case_and_anything_else_is_refused() {
    for t in ["TRUE", "true", "True", "1", "yes", "YES", " yes "] {
        assert_eq!(parse_label(t), Some(true), "{t}");
    }
    for f in ["FALSE", "false", "0", "no", "No"] {
        assert_eq!(parse_label(f), Some(false), "{f}");
    }
    for other in ["", "maybe", "1.0", "y", "2", "-1", "t"] {
        assert_eq!(parse_label(other), None, "{other}");
    }
}

#[test]
fn a_bad_label_is_reported_with_its_line_and_value() {
    let mut text = learnable(20);
    text.push_str("3,red,maybe\r\n");

    let e = train(&text, &opts("y")).unwrap_err();

    // Header is line 1, rows 2..=21, the bad row line 22.
    let message = e.to_string();
    assert!(
        message.contains("line 22") && message.contains("\"maybe\""),
        "{message}"
    );
}

#[test]
fn fields_split_on_commas_and_quoted_fields_may_hold_commas() {
    let f = split_fields(r#" a ,"b, c","say ""hi""",,d"#).unwrap();
    assert_eq!(f, vec!["a", "b, c", r#"say "hi""#, "", "d"]);
    assert_eq!(split_fields(r#"a,"open"#), None);
    assert_eq!(split_fields(r#""a"b,c"#), None);
}

#[test]
fn categorical_columns_are_one_hot_encoded_with_sorted_level_names() {
    // Arrange: colour is text, so categorical; size holds numbers but is
    // forced categorical, and its levels sort by value (2 before 10).
    let text = "colour,size,visits,delta,y\n\
                red,10,0,-1.5,1\n\
                blue,2,3,2,0\n\
                green,10,1,0.5,0\n";
    let o = TableOptions {
        categorical: vec!["size".into()],
        ..opts("y")
    };
    let parsed = parse_table("t.csv", text, &o).unwrap();

    // Act
    let encoding = plan_encoding("t.csv", &parsed, &o).unwrap();
    let x = encode_rows(&encoding, &parsed).unwrap();

    // Assert
    assert_eq!(
        encoding.feature_names(),
        [
            "colour=blue",
            "colour=green",
            "colour=red",
            "size=2",
            "size=10",
            "visits",
            "delta"
        ]
    );
    // visits has no negative value: ln(1 + 0), ln(1 + 3) = ln 4, ln 2;
    // delta has one, so it stays as it is.
    let (ln4, ln2) = (1.386_294_361_119_890_6, std::f64::consts::LN_2);
    let want = [
        [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.5],
        [1.0, 0.0, 0.0, 1.0, 0.0, ln4, 2.0],
        [0.0, 1.0, 0.0, 0.0, 1.0, ln2, 0.5],
    ];
    for (r, row) in want.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            assert!((x[[r, c]] - v).abs() < 1e-15, "[{r}, {c}] {}", x[[r, c]]);
        }
    }
}

#[test]
fn log_scaling_can_be_turned_off() {
    let text = "visits,y\n3,1\n0,0\n";
    let o = TableOptions {
        log_scale: false,
        ..opts("y")
    };
    let parsed = parse_table("t.csv", text, &o).unwrap();
    let encoding = plan_encoding("t.csv", &parsed, &o).unwrap();
    assert_eq!(
        encoding.columns,
        [ColumnEncoding::Numeric {
            column: "visits".into(),
            log1p: false
        }]
    );
}

#[test]
fn the_encoding_transforms_new_rows_by_column_name() {
    let encoding = Encoding {
        columns: vec![
            ColumnEncoding::Categorical {
                column: "colour".into(),
                levels: vec!["blue".into(), "red".into()],
            },
            ColumnEncoding::Numeric {
                column: "visits".into(),
                log1p: true,
            },
        ],
        interactions: None,
    };
    // Columns in another order, an extra one, no label.
    let header: Vec<String> = ["visits", "other", "colour"].map(String::from).into();
    let encoder = encoding.bind(&header).unwrap();

    assert_eq!(
        encoder.encode(&["1", "x", "red"]).unwrap(),
        [0.0, 1.0, LN_2]
    );
    // An unseen level is all zeros; a negative count keeps its sign.
    assert_eq!(
        encoder.encode(&["-1", "x", "green"]).unwrap(),
        [0.0, 0.0, -LN_2]
    );
    assert_eq!(
        encoder.encode(&["many", "x", "red"]),
        Err(RowProblem::Number {
            column: "visits".into(),
            value: "many".into()
        })
    );
    assert!(matches!(
        encoding.bind(&["visits".to_string()]),
        Err(TableError::MissingColumn { column }) if column == "colour"
    ));
}

use std::f64::consts::LN_2;

#[test]
fn a_row_with_the_wrong_number_of_fields_is_reported_with_its_line() {
    // Arrange: CRLF, and a blank line 2 that still counts: rows are
    // lines 3 to 22, the short row line 23.
    let mut text = learnable(20).replacen("\r\n", "\r\n\r\n", 1);
    text.push_str("4,red\r\n");

    let e = train(&text, &opts("y")).unwrap_err();

    match &e {
        TableError::TooManyBadRows {
            count: 1,
            max: 0,
            first,
            ..
        } => assert_eq!(
            *first,
            BadRow {
                line: 23,
                problem: RowProblem::FieldCount {
                    expected: 3,
                    found: 2
                }
            }
        ),
        other => panic!("{other}"),
    }
    assert!(
        e.to_string()
            .contains("line 23: expected 3 fields, found 2"),
        "{e}"
    );
}

#[test]
fn a_non_number_in_a_numeric_column_is_a_malformed_row() {
    let mut text = learnable(20);
    text.push_str("lots,red,no\r\n");
    let o = TableOptions {
        numeric: vec!["x".into()],
        ..opts("y")
    };

    let e = train(&text, &o).unwrap_err();

    let message = e.to_string();
    assert!(
        message.contains("line 22") && message.contains("column \"x\": \"lots\" is not a number"),
        "{message}"
    );
}

#[test]
fn max_bad_rows_skips_and_counts_up_to_the_limit_and_stops_beyond_it() {
    // Arrange: two bad rows, at lines 5 and 12.
    let mut lines: Vec<String> = learnable(30).lines().map(String::from).collect();
    lines[4] = "1,red".into();
    lines[11] = "1,red,perhaps".into();
    let text = lines.join("\n");

    // Act
    let within = train(
        &text,
        &TableOptions {
            max_bad_rows: 2,
            ..opts("y")
        },
    )
    .unwrap();
    let beyond = train(
        &text,
        &TableOptions {
            max_bad_rows: 1,
            ..opts("y")
        },
    )
    .unwrap_err();

    // Assert
    assert_eq!(within.artifact.metrics.rows, 28);
    assert_eq!(within.artifact.metrics.bad_rows_skipped, 2);
    let lines_skipped: Vec<usize> = within.bad_rows.iter().map(|b| b.line).collect();
    assert_eq!(lines_skipped, [5, 12]);
    assert!(within.out_of_fold.iter().all(|(l, _)| *l != 5 && *l != 12));
    match beyond {
        TableError::TooManyBadRows {
            count: 2,
            max: 1,
            first,
            ..
        } => assert_eq!(first.line, 5),
        other => panic!("{other}"),
    }
}

#[test]
fn empty_headerless_and_label_less_files_are_clear_errors() {
    let o = opts("y");
    assert!(matches!(train("", &o), Err(TableError::Empty { .. })));
    assert!(matches!(
        train("\r\n  \n", &o),
        Err(TableError::Empty { .. })
    ));
    assert!(matches!(
        train("1,2,0\n3,4,1\n", &o),
        Err(TableError::NoHeader { line: 1, .. })
    ));
    let e = train("a,b,label\n1,2,0\n", &o).unwrap_err();
    assert!(matches!(e, TableError::MissingLabel { .. }));
    assert!(
        e.to_string()
            .contains(r#"the header has "a", "b", "label""#),
        "{e}"
    );
    assert!(matches!(train("a,y\n", &o), Err(TableError::NoRows { .. })));
    assert!(matches!(
        train("y\n1\n0\n", &o),
        Err(TableError::NoFeatures { .. })
    ));
    let e = train("a,a,y\n1,2,0\n", &o).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"a\" appears twice (columns 1 and 2)"),
        "{e}"
    );
    let e = train("a,,y\n1,2,0\n", &o).unwrap_err();
    assert!(e.to_string().contains("column 2 has no name"), "{e}");
}

#[test]
fn options_that_name_missing_columns_or_make_no_sense_are_refused() {
    let text = learnable(20);
    let e = train(
        &text,
        &TableOptions {
            categorical: vec!["colur".into()],
            ..opts("y")
        },
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("`categorical` names column \"colur\""),
        "{e}"
    );
    for bad in [
        TableOptions {
            folds: 1,
            ..opts("y")
        },
        TableOptions {
            alphas: vec![],
            ..opts("y")
        },
        TableOptions {
            alphas: vec![f64::NAN],
            ..opts("y")
        },
        TableOptions {
            exclude: vec!["y".into()],
            ..opts("y")
        },
    ] {
        assert!(matches!(train(&text, &bad), Err(TableError::Options(_))));
    }
}

#[test]
fn too_few_rows_of_a_class_for_the_folds_is_refused() {
    let text = "x,y\n1,1\n2,0\n3,0\n4,0\n";
    let e = train(text, &opts("y")).unwrap_err();
    assert!(matches!(
        e,
        TableError::TooFewRows {
            positives: 1,
            negatives: 3,
            folds: 2,
            ..
        }
    ));
}

#[test]
fn a_numeric_column_with_a_stray_word_and_many_values_is_refused_naming_the_line() {
    let text = table("amount,y", 200, |i| {
        let amount = if i == 150 {
            "n/a".to_string()
        } else {
            format!("{}.5", i)
        };
        format!("{amount},{}", i % 2)
    });
    let e = train(&text, &opts("y")).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("column \"amount\" has 200 distinct values")
            && message.contains("line 152 has \"n/a\""),
        "{message}"
    );
}

#[test]
fn values_too_large_to_standardize_are_refused_not_passed_to_the_solver() {
    let text = table("big,y", 8, |i| {
        format!("{},{}", if i % 2 == 0 { "-1e308" } else { "1e308" }, i % 2)
    });
    // With log1p the column would be tame; it has negatives, so it is not.
    let e = train(&text, &opts("y")).unwrap_err();
    assert!(
        matches!(e, TableError::TooLarge { ref feature, .. } if feature == "big"),
        "{e}"
    );
}

#[test]
fn non_utf8_text_is_reported_with_its_line() {
    let mut bytes = b"a,y\r\n1,0\r\n".to_vec();
    bytes.extend_from_slice(b"\xff,1\r\n");
    let e = train_bytes(
        "t.csv",
        "t.csv",
        &bytes,
        &opts("y"),
        Millis::from_unix_millis(0),
    )
    .unwrap_err();
    assert!(matches!(e, TableError::NotUtf8 { line: 3, .. }), "{e}");
}

#[test]
fn folds_are_stratified_deterministic_and_shuffled_by_the_seed() {
    let labels: Vec<bool> = (0..103).map(|i| i % 5 == 0).collect();

    let folds = stratified_folds(&labels, 4, 7);

    // 21 positives and 82 negatives over 4 folds.
    for f in 0..4 {
        let pos = (0..103).filter(|&i| folds[i] == f && labels[i]).count();
        let neg = (0..103).filter(|&i| folds[i] == f && !labels[i]).count();
        assert!((5..=6).contains(&pos), "fold {f}: {pos} positives");
        assert!((20..=21).contains(&neg), "fold {f}: {neg} negatives");
    }
    assert_eq!(folds, stratified_folds(&labels, 4, 7));
    assert_ne!(folds, stratified_folds(&labels, 4, 8));
}

#[test]
fn a_table_whose_only_feature_is_constant_predicts_the_base_rate() {
    // Arrange: 4 positives, 12 negatives, 4 folds: every training part
    // holds 3 positives of 12 rows, so every out-of-fold probability is
    // 1/4, the fitted coefficient 0 and the intercept ln(1/3).
    let text = table("shop,bought", 16, |i| {
        format!("main,{}", if i % 4 == 0 { "TRUE" } else { "FALSE" })
    });
    let o = TableOptions {
        folds: 4,
        alphas: vec![1.0, 10.0],
        ..opts("bought")
    };

    // Act
    let report = train(&text, &o).unwrap();

    // Assert
    let a = &report.artifact;
    let m = &a.metrics;
    assert_eq!(a.feature_names, ["shop=main"]);
    for (_, p) in &report.out_of_fold {
        assert!((p - 0.25).abs() < 1e-6, "{p}");
    }
    // −(¼ ln ¼ + ¾ ln ¾); ¼ (¾)² + ¾ (¼)² = 3/16.
    assert!((m.pooled_log_loss - 0.562_335_144_618_808_3).abs() < 1e-6);
    assert!((m.pooled_brier - 0.1875).abs() < 1e-9);
    assert_eq!(m.pooled_roc_auc, Some(0.5));
    assert_eq!(m.mean_fold_roc_auc, Some(0.5));
    assert!((m.pooled_pr_auc.unwrap() - 0.25).abs() < 1e-12);
    assert!((m.base_rate - 0.25).abs() < 1e-15);
    assert_eq!(a.coefficients, [0.0]);
    assert!(
        (a.intercept - (1.0f64 / 3.0).ln()).abs() < 1e-6,
        "{}",
        a.intercept
    );
    // Equal losses: the first alpha of the grid is kept; at the grid's
    // lower edge, so 0.1 is tried too (and ties).
    assert_eq!(m.alpha, 1.0);
    let tried: Vec<f64> = m.alpha_search.iter().map(|a| a.alpha).collect();
    assert_eq!(tried, [0.1, 1.0, 10.0]);
}

#[test]
fn the_alpha_search_widens_past_the_grid_until_the_best_is_inside() {
    // Arrange: a feature of pure noise, so the strongest L2 wins at
    // first; a grid of two weak strengths puts the best at its top edge.
    let text = table("noise,bought", 200, |i| {
        let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        format!("{},{}", h % 1000, if i % 3 == 0 { "TRUE" } else { "FALSE" })
    });
    let o = TableOptions {
        folds: 4,
        alphas: vec![0.001, 0.01],
        ..opts("bought")
    };

    // Act
    let m = train(&text, &o).unwrap().artifact.metrics;

    // Assert: tenfold steps up from 0.01, in order, the chosen alpha
    // inside what was tried or at the widest the search goes.
    let tried: Vec<f64> = m.alpha_search.iter().map(|a| a.alpha).collect();
    assert!(tried.len() > 2, "{tried:?}");
    for w in tried.windows(2) {
        assert!((w[1] / w[0] - 10.0).abs() < 1e-9, "{tried:?}");
    }
    let last = *tried.last().unwrap();
    assert!(
        m.alpha < last || last >= WIDEST_ALPHA.1,
        "{tried:?}, chose {}",
        m.alpha
    );
    assert!(m.alpha > 0.01, "chose {}", m.alpha);
}

#[test]
fn a_separable_table_ranks_every_held_out_row_correctly() {
    let text = table("score,y", 40, |i| {
        let pos = i % 4 == 0;
        format!("{},{}", if pos { 10 + i % 3 } else { i % 3 }, u8::from(pos))
    });
    let report = train(
        &text,
        &TableOptions {
            folds: 5,
            ..opts("y")
        },
    )
    .unwrap();
    let m = &report.artifact.metrics;
    // Every positive outranks every negative; Mann–Whitney's arithmetic
    // may land a rounding step below 1.
    let perfect = |v: Option<f64>| (v.unwrap() - 1.0).abs() < 1e-12;
    assert!(
        m.fold_roc_auc.iter().all(|&a| perfect(a)),
        "{:?}",
        m.fold_roc_auc
    );
    assert!(perfect(m.pooled_roc_auc), "{:?}", m.pooled_roc_auc);
    assert!(perfect(m.pooled_pr_auc), "{:?}", m.pooled_pr_auc);
    assert!(report.artifact.coefficients[0] > 0.0);
}

#[test]
fn the_artifact_round_trips_through_an_atomic_write_and_predicts_as_fitted() {
    // Arrange
    let report = train(&learnable(60), &opts("y")).unwrap();
    let a = &report.artifact;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");

    // Act
    write_artifact(&path, a).unwrap();
    let back = TableModelArtifact::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();

    // Assert
    let json = |a: &TableModelArtifact| serde_json::to_value(a).unwrap();
    assert_eq!(json(&back), json(a));
    assert_eq!(back.encoding, a.encoding);
    assert_eq!(back.format, "rung.table-model.v1");
    assert_eq!(back.source, "table.csv");
    assert_eq!(back.created_at, "2023-11-14T22:13:20.000Z");
    assert!(
        back.version.starts_with("20231114221320-"),
        "{}",
        back.version
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    // A new row through the stored encoding: x = 7, blue.
    let header: Vec<String> = ["x", "colour"].map(String::from).into();
    let features = back
        .encoding
        .bind(&header)
        .unwrap()
        .encode(&["7", "blue"])
        .unwrap();
    // Features in header order: x (ln 8), colour=blue (1), colour=red (0).
    let z = back.intercept
        + back.coefficients[0] * (8f64.ln() - back.means[0]) / back.scales[0]
        + back.coefficients[1] * (1.0 - back.means[1]) / back.scales[1]
        + back.coefficients[2] * (0.0 - back.means[2]) / back.scales[2];
    let p = back.probability(&features).unwrap();
    assert!((p - 1.0 / (1.0 + (-z).exp())).abs() < 1e-12);
    assert_eq!(back.probability(&[1.0]), None);
}

#[test]
fn an_artifact_of_another_format_or_with_mismatched_parts_is_refused() {
    let a = train(&learnable(60), &opts("y")).unwrap().artifact;
    let mut other = a.clone();
    other.format = "rung.model.v1".into();
    let e = TableModelArtifact::from_json(&serde_json::to_string(&other).unwrap()).unwrap_err();
    assert!(e.to_string().contains("\"rung.model.v1\""), "{e}");
    let mut short = a;
    short.scales.pop();
    assert!(TableModelArtifact::from_json(&serde_json::to_string(&short).unwrap()).is_err());
    assert!(TableModelArtifact::from_json("{").is_err());
}

mod no_panic {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn no_input_makes_training_panic(
            text in "[a-c01,\"\r\n .e-]{0,120}",
            max_bad_rows in 0usize..3,
        ) {
            let text = format!("a,y\n{text}");
            let o = TableOptions { max_bad_rows, ..opts("y") };
            let _ = train(&text, &o);
        }

        #[test]
        fn no_near_miss_table_makes_training_panic(
            rows in proptest::collection::vec(("[0-9a.e-]{0,4}", "(0|1|yes|no|TRUE|false|x)"), 0..30),
            folds in 0usize..5,
            log_scale in any::<bool>(),
        ) {
            let mut text = String::from("a,y\r\n");
            for (a, y) in &rows {
                text.push_str(&format!("{a},{y}\r\n"));
            }
            let o = TableOptions { folds, log_scale, max_bad_rows: 5, max_iterations: 40, ..opts("y") };
            let _ = train(&text, &o);
        }

        #[test]
        fn no_bytes_make_training_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = train_bytes("t.csv", "t.csv", &bytes, &opts("y"), Millis::from_unix_millis(0));
        }
    }
}
