//! Tabular training mode on a real table: the UCI Online Shoppers Purchasing
//! Intention data (tests/data/README.md), 12,330 sessions, label `Revenue`.
//! One training run (5 folds, the default L2 grid) is shared by the tests.
//!
//! The scikit-learn figures below come from this script (scikit-learn 1.9.1,
//! run from the crate root), which encodes the file independently of rung:
//!
//! ```python
//! import csv, math
//! import numpy as np
//! from sklearn.linear_model import LogisticRegression
//! from sklearn.model_selection import StratifiedKFold
//! from sklearn.metrics import log_loss
//! from sklearn.preprocessing import StandardScaler
//! rows = list(csv.reader(open("tests/data/online_shoppers_intention.csv", newline="")))
//! header, rows = rows[0], rows[1:]
//! li = header.index("Revenue")
//! y = np.array([r[li] == "TRUE" for r in rows])
//! cats = {"Month", "VisitorType", "Weekend", "OperatingSystems", "Browser", "Region", "TrafficType"}
//! def isnum(v):
//!     try: return math.isfinite(float(v))
//!     except ValueError: return False
//! names, cols = [], []
//! for j, c in enumerate(header):
//!     if j == li: continue
//!     vals = [r[j] for r in rows]
//!     if c in cats or not all(isnum(v) for v in vals):
//!         lv = sorted(set(vals))
//!         if all(isnum(v) for v in lv): lv = sorted(lv, key=float)
//!         for l in lv:
//!             names.append(f"{c}={l}"); cols.append(np.array([v == l for v in vals], float))
//!     else:
//!         v = np.array(vals, float)
//!         if (v >= 0).all(): v = np.log1p(v)
//!         names.append(c); cols.append(v)
//! X = np.column_stack(cols)
//! for alpha in [1, 10, 100, 1000]:   # its own folds: the choice, not the folds, is compared
//!     oof = np.zeros(len(y))
//!     for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
//!         sc = StandardScaler().fit(X[tr])
//!         m = LogisticRegression(C=1/alpha, tol=1e-10, max_iter=10000).fit(sc.transform(X[tr]), y[tr])
//!         oof[te] = m.predict_proba(sc.transform(X[te]))[:, 1]
//!     print(alpha, log_loss(y, oof))   # 0.25403, 0.25295, 0.25260, 0.27653: 100 wins
//! Z = StandardScaler().fit_transform(X)
//! m = LogisticRegression(C=1/100, tol=1e-12, max_iter=100000).fit(Z, y)
//! print(log_loss(y, m.predict_proba(Z)[:, 1]), m.intercept_[0])
//! for n in ["PageValues", "ExitRates", "Month=Nov", "VisitorType=New_Visitor", "ProductRelated_Duration"]:
//!     print(n, m.coef_[0][names.index(n)])
//! ```

use std::sync::OnceLock;

use rung::training::tabular::{
    train_table, write_artifact, ColumnEncoding, TableModelArtifact, TableOptions, TableReport,
};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/online_shoppers_intention.csv"
);

/// scikit-learn's fit on every row at alpha 100 (C = 0.01), from the script.
const SKLEARN_IN_SAMPLE_LOG_LOSS: f64 = 0.24753101235099645;
const SKLEARN_INTERCEPT: f64 = -2.5464786454713932;
const SKLEARN_COEFFICIENTS: [(&str, f64); 5] = [
    ("PageValues", 1.3038959950482358),
    ("ExitRates", -0.2763791687917663),
    ("Month=Nov", 0.3245540105912749),
    ("VisitorType=New_Visitor", 0.09451405108814195),
    ("ProductRelated_Duration", 0.07258680908725686),
];

fn report() -> &'static TableReport {
    static REPORT: OnceLock<TableReport> = OnceLock::new();
    REPORT.get_or_init(|| train(false))
}

/// The same run with every pairwise product of the numeric features.
fn with_interactions() -> &'static TableReport {
    static REPORT: OnceLock<TableReport> = OnceLock::new();
    REPORT.get_or_init(|| train(true))
}

fn train(interactions: bool) -> TableReport {
    let mut opts = TableOptions::new(DATA, "Revenue");
    if interactions {
        opts.interactions = true;
        // The default grid (1, 10, 100, 1000) chooses 10 on this table with
        // the products (`rung train --interactions pairwise`, README); one
        // strength keeps this debug-build test to a sixth of the fits.
        opts.alphas = vec![10.0];
    }
    opts.categorical = [
        "Month",
        "VisitorType",
        "Weekend",
        "OperatingSystems",
        "Browser",
        "Region",
        "TrafficType",
    ]
    .map(String::from)
    .into();
    train_table(&opts).expect("the UCI table trains")
}

/// The file's rows split into fields, with their labels.
fn rows() -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(DATA).unwrap();
    let mut lines = text.lines();
    let split = |l: &str| l.split(',').map(str::to_string).collect::<Vec<_>>();
    let header = split(lines.next().unwrap());
    (header, lines.map(split).collect())
}

fn in_sample_log_loss(a: &TableModelArtifact) -> f64 {
    let (header, rows) = rows();
    let label = header.iter().position(|h| h == "Revenue").unwrap();
    let encoder = a.encoding.bind(&header).unwrap();
    let total: f64 = rows
        .iter()
        .map(|r| {
            let p = a.probability(&encoder.encode(r).unwrap()).unwrap();
            if r[label] == "TRUE" {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    total / rows.len() as f64
}

#[test]
fn cross_validated_roc_auc_reaches_the_published_figure_for_logistic_regression() {
    let m = &report().artifact.metrics;
    eprintln!(
        "fold ROC AUC {:?}; mean {:?}, pooled {:?}, PR AUC {:?}, log loss {}, Brier {}, alpha {}",
        m.fold_roc_auc,
        m.mean_fold_roc_auc,
        m.pooled_roc_auc,
        m.pooled_pr_auc,
        m.pooled_log_loss,
        m.pooled_brier,
        m.alpha
    );

    // Published: 0.914 (tests/data/README.md).
    assert_eq!(m.folds, 5);
    assert!(m.mean_fold_roc_auc.unwrap() >= 0.91, "{m:?}");
    assert!(m.pooled_roc_auc.unwrap() >= 0.91, "{m:?}");
    // Far above the base rate, which is what a useless model would score.
    assert!(m.pooled_pr_auc.unwrap() > 3.0 * m.base_rate, "{m:?}");
}

#[test]
fn the_whole_table_is_read_and_encoded_as_asked() {
    let a = &report().artifact;
    let m = &a.metrics;

    // 12,330 sessions, 1,908 with revenue (tests/data/README.md).
    assert_eq!(
        (m.rows, m.positives, m.bad_rows_skipped),
        (12_330, 1_908, 0)
    );
    assert!((m.base_rate - 1908.0 / 12330.0).abs() < 1e-15);
    // 10 numeric columns; levels: Month 10, OperatingSystems 8, Browser 13,
    // Region 9, TrafficType 20, VisitorType 3, Weekend 2.
    assert_eq!(a.feature_names.len(), 10 + 10 + 8 + 13 + 9 + 20 + 3 + 2);
    for name in [
        "Month=Nov",
        "Browser=13",
        "Weekend=TRUE",
        "VisitorType=Other",
    ] {
        assert!(a.feature_names.iter().any(|n| n == name), "{name}");
    }
    let browser = a
        .feature_names
        .iter()
        .position(|n| n == "Browser=2")
        .unwrap();
    assert_eq!(
        a.feature_names[browser + 8],
        "Browser=10",
        "levels sort by value"
    );
    assert!(a.encoding.columns.contains(&ColumnEncoding::Numeric {
        column: "ProductRelated_Duration".into(),
        log1p: true
    }));
    assert_eq!(a.label, "Revenue");
    assert_eq!(a.source, "online_shoppers_intention.csv");
    // The data README's checksum of the file.
    assert_eq!(
        a.source_sha256,
        "b3055ee355f59134d851d32641183cb4a8b45def7124d2f50442a042f358e0d9"
    );
}

#[test]
fn the_chosen_alpha_and_the_final_fit_agree_with_scikit_learn() {
    let a = &report().artifact;

    // scikit-learn's cross-validation over the same grid also picks 100.
    assert_eq!(a.metrics.alpha, 100.0);
    assert_eq!(a.metrics.alpha_search.len(), 4);
    assert!((in_sample_log_loss(a) - SKLEARN_IN_SAMPLE_LOG_LOSS).abs() < 1e-5);
    assert!(
        (a.intercept - SKLEARN_INTERCEPT).abs() < 5e-3,
        "{}",
        a.intercept
    );
    for (name, want) in SKLEARN_COEFFICIENTS {
        let i = a.feature_names.iter().position(|n| n == name).unwrap();
        let got = a.coefficients[i];
        assert!((got - want).abs() < 5e-3, "{name}: {got} vs {want}");
    }
}

#[test]
fn the_artifact_is_written_and_read_back_unchanged() {
    let a = &report().artifact;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoppers.json");

    write_artifact(&path, a).unwrap();
    let back = TableModelArtifact::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();

    let json = |a: &TableModelArtifact| serde_json::to_value(a).unwrap();
    assert_eq!(json(&back), json(a));
    assert_eq!(back.format, "rung.table-model.v1");
    assert_eq!(back.feature_names, a.feature_names);
}

#[test]
fn pairwise_interactions_lift_the_cross_validated_roc_auc_toward_boosted_trees() {
    let plain = &report().artifact;
    let a = &with_interactions().artifact;
    let m = &a.metrics;
    eprintln!(
        "with interactions: mean fold ROC AUC {:?}, pooled {:?}, PR AUC {:?}, alpha {}",
        m.mean_fold_roc_auc, m.pooled_roc_auc, m.pooled_pr_auc, m.alpha
    );
    // 10 numeric columns: 10 · 11 / 2 products after the 75 features.
    assert_eq!(a.feature_names.len(), plain.feature_names.len() + 55);
    assert!(a
        .feature_names
        .contains(&"ExitRates × PageValues".to_string()));
    assert!(a
        .feature_names
        .contains(&"PageValues × PageValues".to_string()));
    // scikit-learn with pairwise products on the same folds' scheme: 0.9285
    // (the issue's measurement); boosted trees 0.9325.
    assert!(m.pooled_roc_auc.unwrap() >= 0.925, "{m:?}");
    assert!(m.pooled_roc_auc > plain.metrics.pooled_roc_auc, "{m:?}");
    an_interaction_is_the_product_of_the_standardized_features();
}

/// Part of the test above, on the same run (one training per process).
fn an_interaction_is_the_product_of_the_standardized_features() {
    let a = &with_interactions().artifact;
    let (header, rows) = rows();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // Standardize log1p(PageValues) and log1p(ExitRates) by hand over
    // every row (population standard deviation).
    let standardized = |name: &str| -> Vec<f64> {
        let v: Vec<f64> = rows
            .iter()
            .map(|r| r[col(name)].parse::<f64>().unwrap().ln_1p())
            .collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        v.iter().map(|x| (x - mean) / sd).collect()
    };
    let (pages, exits) = (standardized("PageValues"), standardized("ExitRates"));
    let at = a
        .feature_names
        .iter()
        .position(|n| n == "ExitRates × PageValues")
        .unwrap();
    let encoder = a.encoding.bind(&header).unwrap();
    for i in [0, 1, 17, 4_000, rows.len() - 1] {
        let x = encoder.encode(&rows[i]).unwrap();
        let want = pages[i] * exits[i];
        assert!((x[at] - want).abs() < 1e-9, "row {i}: {} vs {want}", x[at]);
    }
    // And the artifact reads back with its interactions.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("interactions.json");
    write_artifact(&path, a).unwrap();
    let back = TableModelArtifact::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back.encoding, a.encoding);
}
