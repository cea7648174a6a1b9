//! The training-set export: `rung examples` and `rung train --examples-out`
//! write the very examples training builds, and scikit-learn fitted on them
//! the way the README's recipe says reproduces rung's held-out ROC AUC.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::{ok, rung, s, scratch};
use common::python::python;
use rung::domain::Taxonomy;
use rung::training::eventlog::{self, Preset};
use rung::training::examples::Cutoffs;
use rung::training::export::LEADING_COLUMNS;
use rung::training::pipeline::{self, Part, Quiet, TrainOptions};

fn simulated_log(dir: &Path, visitors: &str) -> PathBuf {
    common::cli::simulated_log(dir, visitors, "11")
}

#[test]
fn the_export_holds_the_examples_training_builds_bit_for_bit() {
    // Arrange
    let dir = scratch("bits");
    let log = simulated_log(&dir, "3000");
    let (exported, fitted) = (dir.join("examples.csv"), dir.join("fitted.csv"));

    // Act: the export command, and training writing the set it fits.
    let said = ok(&rung(&[
        "examples",
        "--events",
        s(&log),
        "--cutoffs",
        "page-view",
        "--out",
        s(&exported),
    ]));
    ok(&rung(&[
        "train",
        "--events",
        s(&log),
        "--cutoffs",
        "page-view",
        "--no-plots",
        "--out",
        s(&dir.join("m.json")),
        "--examples-out",
        s(&fitted),
    ]));

    // Assert: both files are the same set...
    let text = std::fs::read_to_string(&exported).unwrap();
    assert_eq!(text, std::fs::read_to_string(&fitted).unwrap());
    // ...and equal, value for value, to what the library builds in memory.
    let taxonomy = Taxonomy::builtin();
    let read = eventlog::read(&log, &Preset::Rung.mapping(), &taxonomy, 0, &|_| {}).unwrap();
    let opts = TrainOptions {
        cutoffs: Cutoffs::PageView { seed: 7 },
        ..TrainOptions::default()
    };
    let prepared = pipeline::prepare(&taxonomy, &read.visitors, &opts, &Quiet).unwrap();
    let ex = &prepared.examples;
    let mut csv = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    let want: Vec<String> = LEADING_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(prepared.names.iter().cloned())
        .collect();
    assert_eq!(header, want);
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), ex.len());
    assert!(said.contains(&format!("{} examples", ex.len())), "{said}");
    let bits = |v: &str| v.parse::<f64>().unwrap().to_bits();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(&row[0], read.visitors[ex.visitor[i]].0.as_str(), "row {i}");
        let cutoff = rung::domain::Millis::parse_rfc3339(&row[1]).unwrap();
        assert_eq!(cutoff.as_unix_millis() - 1, ex.as_of[i].as_unix_millis());
        assert_eq!(&row[2], prepared.parts[i].name().as_ref(), "row {i}");
        assert_eq!(&row[3], if ex.y[i] { "1" } else { "0" }, "row {i}");
        assert_eq!(bits(&row[4]), ex.ladder_score[i].to_bits(), "row {i}");
        for (j, v) in ex.x.row(i).iter().enumerate() {
            assert_eq!(bits(&row[5 + j]), v.to_bits(), "row {i}, {}", want[5 + j]);
        }
    }
    // Every part of a time split is there, each with purchases.
    for part in [Part::Train, Part::Validation, Part::Test] {
        let labels: Vec<&str> = rows
            .iter()
            .filter(|r| &r[2] == part.name().as_ref())
            .map(|r| &r[3])
            .collect();
        assert!(labels.contains(&"1"), "{part:?}: {}", labels.len());
    }
}

#[test]
fn k_fold_exports_name_each_examples_fold_and_keep_a_visitor_in_one() {
    let dir = scratch("folds");
    let log = simulated_log(&dir, "1500");
    let out = dir.join("examples.csv");
    ok(&rung(&[
        "examples",
        "--events",
        s(&log),
        "--validation",
        "kfold",
        "--folds",
        "4",
        "--out",
        s(&out),
    ]));
    let mut csv = csv::Reader::from_path(&out).unwrap();
    let mut fold_of = std::collections::HashMap::new();
    let mut folds = std::collections::BTreeSet::new();
    for row in csv.records().map(Result::unwrap) {
        let fold: usize = row[2].parse().expect("a fold number");
        folds.insert(fold);
        let first = *fold_of.entry(row[0].to_string()).or_insert(fold);
        assert_eq!(first, fold, "visitor {} in two folds", &row[0]);
    }
    assert_eq!(folds.into_iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
}

/// "ROC AUC: scikit-learn 0.8034, rung 0.8034" → (0.8034, 0.8034).
fn aucs(stdout: &str) -> (f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ROC AUC:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let numbers: Vec<f64> = line
        .split([' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn scikit_learn_on_the_exported_rows_reproduces_rungs_held_out_roc_auc() {
    let dir = scratch("sklearn");
    let log = simulated_log(&dir, "6000");
    for validation in ["time", "kfold"] {
        reproduce(&dir, &log, validation, &["--cutoffs", "page-view"]);
    }
}

#[test]
fn scikit_learn_forms_the_same_products_for_a_model_with_interactions() {
    let dir = scratch("sklearn-pairwise");
    let log = simulated_log(&dir, "1500");
    let extra = [
        "--interactions",
        "pairwise",
        "--folds",
        "2",
        "--min-positives",
        "10",
    ];
    reproduce(&dir, &log, "kfold", &extra);
}

/// Trains with `extra` flags and the given validation, then runs the
/// README's scikit-learn recipe on the exported examples: it must report
/// the held-out ROC AUC rung reported, within 0.002.
fn reproduce(dir: &Path, log: &Path, validation: &str, extra: &[&str]) {
    let python = python();
    // Arrange: rung trains and writes the set it fitted.
    let (model, examples) = (
        dir.join(format!("{validation}.json")),
        dir.join(format!("{validation}.csv")),
    );
    let mut args = vec![
        "train",
        "--events",
        s(log),
        "--validation",
        validation,
        "--no-plots",
        "--out",
        s(&model),
        "--examples-out",
        s(&examples),
    ];
    args.extend_from_slice(extra);
    ok(&rung(&args));
    let metrics_path = dir.join(format!("{validation}.metrics.json"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics_path).unwrap()).unwrap();
    let held_out = metrics["held_out"].as_str().unwrap();
    let reported = metrics[held_out]["roc_auc"].as_f64().unwrap();

    // Act: the README's recipe.
    let out = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/fit_sklearn.py"
        ))
        .args([s(&examples), s(&metrics_path)])
        .output()
        .unwrap();

    // Assert: the same figure, to the solvers' tolerance.
    let stdout = ok(&out);
    let (sklearn, rung_said) = aucs(&stdout);
    assert!((rung_said - reported).abs() < 1e-4, "{stdout}");
    assert!(
        (sklearn - reported).abs() <= 0.002,
        "{validation}: scikit-learn {sklearn} vs rung {reported}\n{stdout}"
    );
}

/// Reads a Parquet export with pyarrow and the CSV export of the same
/// examples with Python's csv module, and compares them value by value.
const SAME_AS_CSV: &str = r#"
import csv, sys, datetime
import pyarrow.parquet as pq
table = pq.read_table(sys.argv[1])
with open(sys.argv[2], newline="") as f:
    rows = list(csv.reader(f))
header, rows = rows[0], rows[1:]
assert table.column_names == header, (table.column_names, header)
assert table.num_rows == len(rows), (table.num_rows, len(rows))
assert str(table.schema.field("cutoff").type) == "timestamp[ms, tz=UTC]", table.schema
cols = [table.column(n).to_pylist() for n in header]
for r, row in enumerate(rows):
    assert cols[0][r] == row[0] and cols[2][r] == row[2], r
    when = datetime.datetime.fromisoformat(row[1].replace("Z", "+00:00"))
    assert cols[1][r] == when, (r, cols[1][r], row[1])
    assert cols[3][r] == int(row[3]), r
    for c in range(4, len(header)):
        assert cols[c][r] == float(row[c]), (r, header[c], cols[c][r], row[c])
print(f"equal: {len(rows)} rows, {len(header)} columns")
"#;

#[test]
fn the_parquet_export_reads_in_pyarrow_as_the_csv_export_reads() {
    // Arrange
    let python = python();
    let dir = scratch("parquet");
    let log = simulated_log(&dir, "1500");
    let (csv, parquet) = (dir.join("ex.csv"), dir.join("ex.parquet"));

    // Act: the same examples both ways.
    for out in [&csv, &parquet] {
        ok(&rung(&[
            "examples",
            "--events",
            s(&log),
            "--validation",
            "kfold",
            "--out",
            s(out),
        ]));
    }

    // Assert
    let out = Command::new(&python)
        .args(["-c", SAME_AS_CSV, s(&parquet), s(&csv)])
        .output()
        .unwrap();
    let stdout = ok(&out);
    assert!(
        stdout.contains("equal: ") && stdout.contains(" 47 columns"),
        "{stdout}"
    );
    assert!(!stdout.contains("equal: 0 rows"), "{stdout}");
}
