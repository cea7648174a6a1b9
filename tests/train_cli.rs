//! The offline workflow as a data scientist runs it: simulate an event log,
//! train, read the report, evaluate, suggest ladder points.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{ok, rung, s, scratch};

fn simulated_log(dir: &Path, visitors: &str) -> PathBuf {
    common::cli::simulated_log(dir, visitors, "3")
}

#[test]
fn train_writes_an_artifact_the_server_accepts_with_metrics_and_plots() {
    // Arrange
    let dir = scratch("train");
    let log = simulated_log(&dir, "4000");
    let model = dir.join("model.json");

    // Act
    let out = rung(&[
        "train",
        "--events",
        s(&log),
        "--cutoffs",
        "page-view",
        "--out",
        s(&model),
    ]);

    // Assert
    let stdout = ok(&out);
    assert!(
        stdout.contains("ROC AUC") && stdout.contains("ladder only"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&model).unwrap();
    let taxonomy = rung::domain::Taxonomy::builtin();
    let loaded =
        rung::scoring::Model::from_json(&text, &taxonomy).expect("the server would accept it");
    assert!(!loaded.version().is_empty());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.metrics.json")).unwrap())
            .unwrap();
    // The held-out part is named for what it is: the test part; the
    // validation part (where the L2 strength was chosen) has its own figures.
    assert_eq!(metrics["held_out"], "test");
    for part in ["test", "validation"] {
        for key in ["roc_auc", "pr_auc", "log_loss", "brier"] {
            let v = metrics[part][key]
                .as_f64()
                .unwrap_or_else(|| panic!("{part}.{key}"));
            assert!(v.is_finite() && v > 0.0, "{part}.{key} = {v}");
        }
    }
    let sizes = &metrics["examples"];
    assert_eq!(metrics["test"]["examples"], sizes["test"]);
    assert_eq!(metrics["validation"]["examples"], sizes["validation"]);
    assert!(metrics["ladder_baseline"]["roc_auc"].as_f64().is_some());
    assert_eq!(metrics["test"]["calibration"].as_array().unwrap().len(), 10);
    // The simulator's intent shows in the data: the model must beat chance.
    assert!(metrics["test"]["roc_auc"].as_f64().unwrap() > 0.6);
    for plot in ["roc", "pr", "calibration", "coefficients"] {
        let svg =
            std::fs::read_to_string(dir.join("model.report").join(format!("{plot}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{plot}");
    }

    // And evaluate and suggest-ladder read it back.
    let report = dir.join("evaluated");
    let eval = rung(&[
        "evaluate",
        "--model",
        s(&model),
        "--events",
        s(&log),
        "--report-dir",
        s(&report),
    ]);
    ok(&eval);
    assert!(String::from_utf8_lossy(&eval.stdout).contains("PR AUC"));
    let judged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(judged["held_out"], "test");
    assert_eq!(judged["model_version"].as_str(), Some(loaded.version()));
    assert!(
        judged["test"]["roc_auc"].as_f64().unwrap() > 0.6,
        "{judged}"
    );
    assert!(std::fs::read_to_string(report.join("coefficients.svg"))
        .unwrap()
        .starts_with("<svg"));
    // evaluate and suggest-ladder make the server's checks on the artifact:
    // one the server would refuse, they refuse too, naming it.
    let mut wrong: serde_json::Value = serde_json::from_str(&text).unwrap();
    wrong["coefficients"].as_array_mut().unwrap().pop();
    let wrong_path = dir.join("wrong.json");
    std::fs::write(&wrong_path, wrong.to_string()).unwrap();
    for args in [
        vec!["evaluate", "--model", s(&wrong_path), "--events", s(&log)],
        vec!["suggest-ladder", "--model", s(&wrong_path)],
    ] {
        let refused = rung(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{args:?}");
        assert!(stderr.contains("wrong.json"), "{args:?}: {stderr}");
    }
    let suggest = rung(&["suggest-ladder", "--model", s(&model)]);
    assert!(suggest.status.success());
    let snippet = String::from_utf8_lossy(&suggest.stdout);
    // The snippet is valid taxonomy TOML: drop it into a taxonomy and load it.
    let header = "[ladder]\nmilestones = [\"view_item\"]\nscore_scale = 40.0\nsession_gap_minutes = 30.0\n[roles]\npurchase = \"purchase\"\n";
    let t =
        rung::domain::Taxonomy::from_toml(&format!("{header}{snippet}")).expect("snippet parses");
    assert_eq!(t.len(), taxonomy.len());
}

#[test]
fn k_fold_validation_and_balanced_class_weights_also_train() {
    let dir = scratch("kfold");
    let log = simulated_log(&dir, "3000");
    let model = dir.join("m.json");
    let out = rung(&[
        "train",
        "--events",
        s(&log),
        "--cutoffs",
        "page-view",
        "--validation",
        "kfold",
        "--folds",
        "3",
        "--solver",
        "fused",
        "--class-weight",
        "balanced",
        "--no-plots",
        "--out",
        s(&model),
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains("3 folds, pooled out-of-fold"), "{stdout}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("m.metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["held_out"], "out_of_fold");
    assert_eq!(metrics["folds"], 3);
    assert!(metrics.get("test").is_none(), "{metrics}");
    // Balanced weights with the intercept corrected: the mean prediction
    // stays near the base rate instead of near one half.
    let cal = metrics["out_of_fold"]["calibration"].as_array().unwrap();
    let (n, sum): (f64, f64) = cal.iter().fold((0.0, 0.0), |(n, s), b| {
        let c = b["count"].as_f64().unwrap();
        (n + c, s + c * b["mean_predicted"].as_f64().unwrap())
    });
    let base = metrics["out_of_fold"]["base_rate"].as_f64().unwrap();
    assert!(
        (sum / n - base).abs() < 0.05,
        "mean prediction {} vs base rate {base}",
        sum / n
    );
}

#[test]
fn a_malformed_row_stops_training_naming_its_line_unless_allowed() {
    let dir = scratch("bad");
    let log = simulated_log(&dir, "2000");
    let mut text = std::fs::read_to_string(&log).unwrap();
    // Line 3 of the file gets an unreadable time.
    let second_row_start = text.match_indices('\n').nth(1).unwrap().0 + 1;
    let comma = second_row_start + text[second_row_start..].find(',').unwrap() + 1;
    text.insert_str(comma, "soon");
    std::fs::write(&log, text).unwrap();
    let model = dir.join("m.json");

    let refused = rung(&[
        "train",
        "--events",
        s(&log),
        "--out",
        s(&model),
        "--no-plots",
    ]);
    let allowed = rung(&[
        "train",
        "--events",
        s(&log),
        "--out",
        s(&model),
        "--no-plots",
        "--max-bad-rows",
        "1",
        "--cutoffs",
        "page-view",
        "--solver",
        "linfa",
    ]);

    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("line 3") && stderr.contains("soon"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    ok(&allowed);
}

#[test]
fn too_few_purchases_is_a_clear_error_suggesting_the_ladder() {
    let dir = scratch("few");
    let log = simulated_log(&dir, "300");
    let out = rung(&[
        "train",
        "--events",
        s(&log),
        "--out",
        s(&dir.join("m.json")),
        "--min-positives",
        "100000",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ladder"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_empty_or_foreign_file_is_a_clear_error() {
    let dir = scratch("empty");
    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let junk = dir.join("junk.jsonl");
    std::fs::write(&junk, "not json\n{\"a\":1}\n").unwrap();
    let model = dir.join("m.json");
    for (file, extra) in [
        (&empty, vec![]),
        (&junk, vec!["--preset", "segment", "--max-bad-rows", "5"]),
    ] {
        let mut args = vec!["train", "--events", s(file), "--out", s(&model)];
        args.extend(extra);
        let out = rung(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains(s(file)), "{stderr}");
    }
}

#[test]
fn tabular_mode_trains_from_a_feature_table() {
    // 400 rows: buyers view more pages; a categorical column rides along.
    let dir = scratch("table");
    let mut csv = String::from("pages,channel,bought\n");
    for i in 0..400u32 {
        let pages = (i * 7919) % 50;
        let bought = pages > 30 || i % 23 == 0;
        let channel = ["ads", "mail", "direct"][(i % 3) as usize];
        csv.push_str(&format!(
            "{pages},{channel},{}\n",
            if bought { "TRUE" } else { "FALSE" }
        ));
    }
    let table = dir.join("table.csv");
    std::fs::write(&table, csv).unwrap();
    let model = dir.join("table-model.json");

    let out = rung(&[
        "train",
        "--table",
        s(&table),
        "--label",
        "bought",
        "--out",
        s(&model),
    ]);

    let stdout = ok(&out);
    assert!(stdout.contains("ROC AUC"), "{stdout}");
    let artifact = rung::training::tabular::TableModelArtifact::from_json(
        &std::fs::read_to_string(&model).unwrap(),
    )
    .unwrap();
    assert!(
        artifact.feature_names.iter().any(|n| n == "channel=mail"),
        "{:?}",
        artifact.feature_names
    );
    assert!(artifact.metrics.pooled_roc_auc.unwrap() > 0.8);
}

/// Exit code 2 and the flag named, for a log that does not exist: the
/// value is refused when the flags are read, before any file is opened.
#[test]
fn bad_numbers_and_typos_in_flags_are_refused_before_the_log_is_read() {
    let dir = scratch("flags");
    let missing = dir.join("no-such-log.csv");
    let out = dir.join("m.json");
    for (flag, value) in [
        ("--horizon-days", "0"),
        ("--horizon-days", "-1"),
        ("--horizon-days", "NaN"),
        ("--horizon-days", "inf"),
        ("--folds", "1"),
        ("--validation", "tiem"),
        ("--max-iterations", "0"),
        ("--delimiter", "semicolons"),
        ("--cutoffs", "fixed:tomorrow"),
    ] {
        for command in ["train", "examples"] {
            if command == "examples" && flag == "--max-iterations" {
                continue;
            }
            let args = [command, "--events", s(&missing), "--out", s(&out)];
            let arg = format!("{flag}={value}");
            let refused = rung(&[&args[..], &[arg.as_str()]].concat());
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert_eq!(refused.status.code(), Some(2), "{command} {arg}: {stderr}");
            assert!(stderr.contains(flag), "{command} {arg}: {stderr}");
            assert!(!stderr.contains("no-such-log"), "{command} {arg}: {stderr}");
        }
    }
}

/// The simulator's log rewritten with `;` between fields.
fn semicolon_log(dir: &Path) -> PathBuf {
    let log = simulated_log(dir, "1500");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(';'));
    let out = dir.join("semicolons.csv");
    std::fs::write(&out, text.replace(',', ";")).unwrap();
    out
}

#[test]
fn named_delimiters_and_rfc_3339_offsets_are_read() {
    let dir = scratch("offsets");
    let log = semicolon_log(&dir);
    // The same instant written two ways.
    let mut files = Vec::new();
    for (name, cutoff) in [
        ("utc", "fixed:2026-01-20T00:00:00Z"),
        ("offset", "fixed:2026-01-20T08:00:00+08:00"),
    ] {
        let out = dir.join(format!("{name}.csv"));
        let run = rung(&[
            "examples",
            "--events",
            s(&log),
            "--delimiter",
            "semicolon",
            "--cutoffs",
            cutoff,
            "--validation",
            "kfold",
            "--out",
            s(&out),
        ]);
        assert!(
            run.status.success(),
            "{cutoff}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        files.push(std::fs::read_to_string(&out).unwrap());
    }
    assert_eq!(files[0], files[1]);
    let rows: Vec<&str> = files[0].lines().skip(1).collect();
    assert!(rows.len() > 100, "{} examples", rows.len());
    assert!(rows
        .iter()
        .all(|r| r.split(',').nth(1) == Some("2026-01-20T00:00:00.000Z")));
}

#[test]
fn a_fixed_cut_off_whose_window_passes_the_data_says_where_the_data_ends() {
    let dir = scratch("past-end");
    let log = simulated_log(&dir, "300");
    let out = rung(&[
        "examples",
        "--events",
        s(&log),
        "--cutoffs",
        "fixed:2026-12-01T00:00:00+01:00",
        "--out",
        s(&dir.join("x.csv")),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // 2026-12-01T00:00:00+01:00 is 2026-11-30T23:00:00Z; +7 days.
    assert!(
        stderr.contains("2026-11-30T23:00:00.000Z") && stderr.contains("2026-12-07T23:00:00.000Z"),
        "{stderr}"
    );
    assert!(stderr.contains("the data runs from 2026-01-01"), "{stderr}");
}

#[test]
fn a_part_without_purchases_says_what_each_part_holds_and_what_would_work() {
    // 300 visitors over 60 days: a 30-day horizon leaves the validation part
    // (15% of the cut-offs) without a whole label window.
    let dir = scratch("empty-part");
    let log = simulated_log(&dir, "300");
    let out = rung(&[
        "train",
        "--events",
        s(&log),
        "--horizon-days",
        "30",
        "--min-positives",
        "1",
        "--out",
        s(&dir.join("m.json")),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("part holds no purchases"), "{stderr}");
    for said in [
        "30 day horizon",
        "train ",
        "validation ",
        "test ",
        "purchases)",
        "--horizon-days",
        "--validation kfold",
    ] {
        assert!(stderr.contains(said), "{said:?} missing: {stderr}");
    }
}

#[test]
fn when_no_event_name_maps_the_unmapped_names_are_in_the_error() {
    let dir = scratch("unmapped");
    let log = dir.join("events.csv");
    std::fs::write(
        &log,
        "visitor_id,time,type\n\
         v1,2026-01-01T00:00:00Z,glance\n\
         v1,2026-01-01T00:01:00Z,glance\n\
         v2,2026-01-01T00:02:00Z,basket_thing\n",
    )
    .unwrap();
    for command in ["train", "examples"] {
        let out = rung(&[command, "--events", s(&log), "--out", s(&dir.join("m"))]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("\"glance\" ×2") && stderr.contains("\"basket_thing\" ×1"),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("3 rows read"), "{command}: {stderr}");
    }
}

/// Every option of the data scientist's commands says what it is for, and
/// no rustdoc link markup reaches the terminal.
#[test]
fn every_flag_has_help_text() {
    for command in [
        "train",
        "examples",
        "evaluate",
        "suggest-ladder",
        "simulate",
    ] {
        let help = String::from_utf8(rung(&[command, "--help"]).stdout).unwrap();
        assert!(!help.contains("[`") && !help.contains("`]"), "{help}");
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            // An option (`--x`, `-h, --help`), not a possible value (`- x:`).
            if !t.starts_with('-') || t.starts_with("- ") {
                continue;
            }
            // Long help: the text is on the lines below, indented further.
            let next = lines.get(i + 1).copied().unwrap_or("");
            let indent = |l: &str| l.len() - l.trim_start().len();
            let below = !next.trim().is_empty()
                && indent(next) > indent(line)
                && !next.trim_start().starts_with('-');
            // Short help: the text follows the flag after two spaces.
            let beside = t
                .split_once("  ")
                .is_some_and(|(_, x)| !x.trim().is_empty());
            let described = below || beside;
            assert!(described, "{command}: {t} has no help text\n{help}");
        }
    }
}

/// The rows of `log` (rung's layout) sorted, as a set to compare exports.
fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_log_in_several_files_gzipped_in_a_folder_or_one_file_per_event_kind_reads_as_one() {
    use std::io::Write;
    // Arrange: one simulated log, and the same rows laid out three more ways.
    let dir = scratch("many-files");
    let log = simulated_log(&dir, "1200");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let (first, second) = rows.split_at(rows.len() / 2);
    // Two files in a folder, the second gzipped.
    let folder = dir.join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("a.csv"),
        format!("{header}\n{}\n", first.join("\n")),
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(folder.join("b.csv.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    write!(gz, "{header}\n{}\n", second.join("\n")).unwrap();
    gz.finish().unwrap();
    // One file per event kind, without the event column (rung's layout:
    // visitor_id,time,type,...).
    let kinds_dir = dir.join("kinds");
    std::fs::create_dir_all(&kinds_dir).unwrap();
    let mut kinds: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for row in &rows {
        let mut fields: Vec<&str> = row.split(',').collect();
        let kind = fields.remove(2);
        kinds.entry(kind).or_default().push(fields.join(","));
    }
    let mut cols: Vec<&str> = header.split(',').collect();
    assert_eq!(cols.remove(2), "type");
    let mut per_kind = Vec::new();
    for (kind, rows) in &kinds {
        let path = kinds_dir.join(format!("{kind}.csv"));
        std::fs::write(&path, format!("{}\n{}\n", cols.join(","), rows.join("\n"))).unwrap();
        per_kind.push(format!("--events-of={kind}={}", s(&path)));
    }
    assert!(kinds.len() > 10, "{} kinds", kinds.len());

    // Act
    let export = |name: &str, source: &[String]| {
        let out = dir.join(format!("{name}.csv"));
        let mut args = vec!["examples".to_string(), "--validation=kfold".into()];
        args.extend(source.iter().cloned());
        args.extend(["--out".into(), s(&out).into()]);
        let run = rung(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        (
            sorted_lines(&out),
            String::from_utf8_lossy(&run.stderr).into_owned(),
        )
    };
    let (whole, said) = export("whole", &[format!("--events={}", s(&log))]);
    let (parts, _) = export(
        "parts",
        &[
            format!("--events={}", s(&folder.join("a.csv"))),
            format!("--events={}", s(&folder.join("b.csv.gz"))),
        ],
    );
    let (in_folder, _) = export("folder", &[format!("--events={}", s(&folder))]);
    let (by_kind, _) = export("kinds", &per_kind);

    // Assert: the same examples, in the same folds, every way.
    assert!(whole.len() > 100);
    assert_eq!(parts, whole);
    assert_eq!(in_folder, whole);
    assert_eq!(by_kind, whole);
    // What was read is said before anything is built.
    let purchases = rows.iter().filter(|r| r.contains(",purchase,")).count();
    assert!(said.contains("events from 2026-01-01T"), "{said}");
    assert!(
        said.contains(&format!(" purchase {purchases}")),
        "{purchases} purchases: {said}"
    );
}

#[test]
fn recalibrate_refits_the_intercept_and_reports_the_test_calibration_before_and_after() {
    let dir = scratch("recalibrate");
    let log = simulated_log(&dir, "4000");
    let model = dir.join("m.json");
    let out = rung(&[
        "train",
        "--events",
        s(&log),
        "--cutoffs",
        "page-view",
        "--recalibrate",
        "--no-plots",
        "--out",
        s(&model),
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains("recalibrated: intercept moved"), "{stdout}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("m.metrics.json")).unwrap())
            .unwrap();
    let r = &metrics["recalibration"];
    assert!(r["intercept_shift"].as_f64().unwrap().is_finite(), "{r}");
    for key in ["test_ece_before", "test_ece_after"] {
        let ece = r[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ece), "{key} = {ece}");
    }
    // The test figures are the recalibrated model's.
    let test_ece = {
        let bins = metrics["test"]["calibration"].as_array().unwrap();
        let n: f64 = bins.iter().map(|b| b["count"].as_f64().unwrap()).sum();
        bins.iter()
            .map(|b| {
                b["count"].as_f64().unwrap()
                    * (b["mean_predicted"].as_f64().unwrap() - b["observed_rate"].as_f64().unwrap())
                        .abs()
            })
            .sum::<f64>()
            / n
    };
    assert!((test_ece - r["test_ece_after"].as_f64().unwrap()).abs() < 1e-12);
    let drift = &metrics["calibration_drift"];
    assert!(drift["fitted_base_rate"].as_f64().unwrap() > 0.0, "{drift}");
    assert!(drift["drifted"].is_boolean(), "{drift}");

    // k folds have no most recent part: refused before the log is read.
    let refused = rung(&[
        "train",
        "--events",
        s(&dir.join("missing.csv")),
        "--validation",
        "kfold",
        "--recalibrate",
        "--out",
        s(&model),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("--recalibrate") && !stderr.contains("missing.csv"),
        "{stderr}"
    );
}

#[test]
fn pairwise_interactions_train_on_an_event_log_into_an_artifact_the_server_accepts() {
    // Arrange
    let dir = scratch("pairwise");
    let log = simulated_log(&dir, "1500");
    let model = dir.join("m.json");

    // Act
    let out = rung(&[
        "train",
        "--events",
        s(&log),
        "--validation",
        "kfold",
        "--folds",
        "2",
        "--min-positives",
        "10",
        "--interactions",
        "pairwise",
        "--out",
        s(&model),
    ]);

    // Assert: 42 features and their 42 · 43 / 2 = 903 products.
    let stdout = ok(&out);
    assert!(
        stdout.contains("945 terms: 42 features and their 903 pairwise products"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&model).unwrap();
    let loaded = rung::scoring::Model::from_json(&text, &rung::domain::Taxonomy::builtin())
        .expect("the server would accept it");
    assert_eq!(loaded.feature_names().len(), 945);
    assert_eq!(loaded.interactions().map(|i| i.paired()), Some(42));
    // The coefficient plot keeps to the largest terms.
    let svg = std::fs::read_to_string(dir.join("m.report/coefficients.svg")).unwrap();
    assert!(
        svg.contains("the 60 largest of 945 coefficients"),
        "{}",
        &svg[..400]
    );
}
