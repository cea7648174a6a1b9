//! The offline workflow as a data scientist runs it: simulate an event log,
//! train, read the report, evaluate, suggest ladder points.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rung(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rung"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn simulated_log(dir: &Path, visitors: &str) -> PathBuf {
    let log = dir.join("events.csv");
    let out = rung(&[
        "simulate",
        "--visitors",
        visitors,
        "--seed",
        "3",
        "--out",
        s(&log),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    log
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    for key in ["roc_auc", "pr_auc", "log_loss", "brier"] {
        let v = metrics["validation"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("validation.{key}"));
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    assert!(metrics["ladder_baseline"]["roc_auc"].as_f64().is_some());
    assert_eq!(
        metrics["validation"]["calibration"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    // The simulator's intent shows in the data: the model must beat chance.
    assert!(metrics["validation"]["roc_auc"].as_f64().unwrap() > 0.6);
    for plot in ["roc", "pr", "calibration", "coefficients"] {
        let svg =
            std::fs::read_to_string(dir.join("model.report").join(format!("{plot}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{plot}");
    }

    // And evaluate and suggest-ladder read it back.
    let eval = rung(&["evaluate", "--model", s(&model), "--events", s(&log)]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert!(String::from_utf8_lossy(&eval.stdout).contains("PR AUC"));
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("m.metrics.json")).unwrap())
            .unwrap();
    // Balanced weights with the intercept corrected: the mean prediction
    // stays near the base rate instead of near one half.
    let cal = metrics["validation"]["calibration"].as_array().unwrap();
    let (n, sum): (f64, f64) = cal.iter().fold((0.0, 0.0), |(n, s), b| {
        let c = b["count"].as_f64().unwrap();
        (n + c, s + c * b["mean_predicted"].as_f64().unwrap())
    });
    let base = metrics["validation"]["base_rate"].as_f64().unwrap();
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
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
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

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
