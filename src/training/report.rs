//! What training leaves beside the artifact: a JSON metrics file, SVG plots
//! (ROC, precision-recall, calibration, coefficients) and a summary for the
//! terminal.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::json;

use super::evaluation::Evaluation;
use super::pipeline::TrainOutcome;

/// `models/x.json` → `models/x.metrics.json` and `models/x.report/`.
pub fn paths_beside(artifact: &Path) -> (PathBuf, PathBuf) {
    let stem = artifact
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let dir = artifact.parent().unwrap_or(Path::new("."));
    (
        dir.join(format!("{stem}.metrics.json")),
        dir.join(format!("{stem}.report")),
    )
}

/// The metrics file: the held-out part by its name (`test`, or with k folds
/// `out_of_fold`), the validation part's figures at the chosen strength,
/// the ladder alone on the held-out examples, the L2 search and the sizes.
pub fn metrics_json(o: &TrainOutcome) -> serde_json::Value {
    let trials = o
        .trials
        .iter()
        .map(|t| {
            json!({
                "l2_per_example": t.lambda,
                "validation_log_loss": t.validation_log_loss,
            })
        })
        .collect::<Vec<_>>();
    let mut m = json!({
        "model_version": o.artifact.version,
        "horizon_days": o.artifact.horizon_days,
        "ladder_baseline": o.ladder,
        "chosen_l2_per_example": o.chosen_lambda,
        "l2_search": trials,
        "interactions": if o.artifact.interactions.is_some() { "pairwise" } else { "none" },
    });
    m["calibration_drift"] = json!(drift(o));
    if let Some(r) = &o.recalibration {
        m["recalibration"] = json!(r);
    }
    match o.sizes.folds {
        None => {
            m["held_out"] = "test".into();
            m["test"] = json!(o.model);
            m["validation"] = json!(o.validation);
            m["examples"] = json!({
                "all": o.sizes.examples,
                "train": o.sizes.train,
                "validation": o.sizes.validation,
                "test": o.sizes.test,
                "final_fit": o.sizes.final_fit,
            });
        }
        Some(folds) => {
            m["held_out"] = "out_of_fold".into();
            m["out_of_fold"] = json!(o.model);
            m["folds"] = folds.into();
            m["examples"] = json!({ "all": o.sizes.examples, "final_fit": o.sizes.final_fit });
        }
    }
    m
}

/// The fitted rows' base rate against the held-out part's, and the
/// held-out part's expected calibration error.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drift {
    pub fitted_base_rate: f64,
    pub held_out_base_rate: f64,
    pub held_out_ece: Option<f64>,
    /// The held-out base rate is more than a tenth (relative) and a
    /// percentage point away from the fitted rows'.
    pub drifted: bool,
}

pub fn drift(o: &TrainOutcome) -> Drift {
    let fitted = o.sizes.final_fit_positives as f64 / o.sizes.final_fit.max(1) as f64;
    let held = o.model.base_rate;
    let gap = (held - fitted).abs();
    Drift {
        fitted_base_rate: fitted,
        held_out_base_rate: held,
        held_out_ece: o.model.expected_calibration_error(),
        drifted: gap > 0.01 && gap > 0.1 * fitted,
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{v:.4}"))
}

/// A side-by-side table of the model and the ladder-only baseline.
pub fn comparison(model: &Evaluation, ladder: &Evaluation) -> String {
    let mut s = format!(
        "held-out examples: {} ({} purchases, base rate {:.4})\n\n{:<22}{:>12}{:>12}\n",
        model.examples, model.positives, model.base_rate, "", "model", "ladder only"
    );
    for (name, a, b) in [
        ("ROC AUC", model.roc_auc, ladder.roc_auc),
        ("PR AUC", model.pr_auc, ladder.pr_auc),
        ("log loss", model.log_loss, ladder.log_loss),
        ("Brier score", model.brier, ladder.brier),
    ] {
        s.push_str(&format!("{name:<22}{:>12}{:>12}\n", opt(a), opt(b)));
    }
    for (m, l) in model.top.iter().zip(&ladder.top) {
        s.push_str(&format!(
            "{:<22}{:>12}{:>12}\n",
            format!("precision, top {:.0}%", m.share * 100.0),
            format!("{:.4}", m.precision),
            format!("{:.4}", l.precision)
        ));
        s.push_str(&format!(
            "{:<22}{:>12}{:>12}\n",
            format!("lift, top {:.0}%", m.share * 100.0),
            format!("{:.2}", m.lift),
            format!("{:.2}", l.lift)
        ));
    }
    s.push_str("\ncalibration (predicted → observed, examples):\n");
    for b in model.calibration.iter().filter(|b| b.count > 0) {
        s.push_str(&format!(
            "  {:.1}–{:.1}: {:.4} → {:.4}  ({})\n",
            b.lower, b.upper, b.mean_predicted, b.observed_rate, b.count
        ));
    }
    s
}

pub fn summary(o: &TrainOutcome) -> String {
    let parts = match o.sizes.folds {
        None => format!(
            "{} train, {} validation, {} test; the final model fitted on {}",
            o.sizes.train, o.sizes.validation, o.sizes.test, o.sizes.final_fit
        ),
        Some(k) => format!("{k} folds, pooled out-of-fold"),
    };
    let terms = match &o.artifact.interactions {
        None => String::new(),
        Some(i) => format!(
            "; {} terms: {} features and their {} pairwise products",
            o.artifact.feature_names.len(),
            i.paired(),
            i.width()
        ),
    };
    let mut s = format!(
        "model {}: {} examples ({parts}); L2 per example {:e}{terms}\n",
        o.artifact.version, o.sizes.examples, o.chosen_lambda
    );
    let d = drift(o);
    if let Some(r) = &o.recalibration {
        s.push_str(&format!(
            "recalibrated: intercept moved {:+.4} on the validation part; test ECE {} → {}\n",
            r.intercept_shift,
            opt(r.test_ece_before),
            opt(r.test_ece_after)
        ));
    } else if d.drifted {
        s.push_str(&format!(
            "the base rate drifted: {:.1}% in the fitted examples, {:.1}% held out (ECE {}); --recalibrate refits the intercept on the most recent validation part\n",
            100.0 * d.fitted_base_rate,
            100.0 * d.held_out_base_rate,
            opt(d.held_out_ece)
        ));
    }
    s.push_str(&comparison(&o.model, &o.ladder));
    s
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// A named curve and its colour.
type Series<'a> = (&'a str, &'a [(f64, f64)], RGBColor);

fn curve_plot(
    path: &Path,
    title: &str,
    x: &str,
    y: &str,
    series: &[Series],
    diagonal: bool,
) -> PlotResult {
    let root = SVGBackend::new(path, (640, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart.configure_mesh().x_desc(x).y_desc(y).draw()?;
    if diagonal {
        chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))?;
    }
    for (label, points, color) in series {
        let c = *color;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The most bars a coefficient plot draws: with interactions a model has
/// hundreds of terms, and only the largest are worth a look.
const MAX_BARS: usize = 60;

fn coefficient_plot(path: &Path, names: &[String], coefficients: &[f64]) -> PlotResult {
    let mut order: Vec<usize> = (0..names.len()).collect();
    let caption = if order.len() > MAX_BARS {
        order.sort_by(|&a, &b| coefficients[b].abs().total_cmp(&coefficients[a].abs()));
        order.truncate(MAX_BARS);
        format!(
            "the {MAX_BARS} largest of {} coefficients (log-odds per standard deviation)",
            names.len()
        )
    } else {
        "coefficients (log-odds per standard deviation)".to_string()
    };
    order.sort_by(|&a, &b| coefficients[a].total_cmp(&coefficients[b]));
    let n = order.len().max(1);
    let max = coefficients.iter().fold(0.1f64, |m, c| m.max(c.abs()));
    let root = SVGBackend::new(path, (760, 40 + 18 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(260)
        .build_cartesian_2d(-max..max, 0f64..n as f64)?;
    let label = |y: &f64| {
        let i = y.floor() as usize;
        order.get(i).map(|&k| names[k].clone()).unwrap_or_default()
    };
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .disable_y_mesh()
        .draw()?;
    chart.draw_series(order.iter().enumerate().map(|(row, &k)| {
        let c = coefficients[k];
        let color = if c >= 0.0 { BLUE } else { RED };
        Rectangle::new(
            [(0.0, row as f64 + 0.15), (c, row as f64 + 0.85)],
            color.filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Writes roc.svg, pr.svg, calibration.svg and coefficients.svg into `dir`.
pub fn write_plots(dir: &Path, o: &TrainOutcome) -> PlotResult {
    plots(
        dir,
        &o.model,
        &o.ladder,
        &o.artifact.feature_names,
        &o.artifact.coefficients,
    )
}

pub fn plots(
    dir: &Path,
    model: &Evaluation,
    ladder: &Evaluation,
    names: &[String],
    coefficients: &[f64],
) -> PlotResult {
    std::fs::create_dir_all(dir)?;
    curve_plot(
        &dir.join("roc.svg"),
        "ROC curve (held out)",
        "false positive rate",
        "true positive rate",
        &[
            ("model", &model.roc_curve, BLUE),
            ("ladder only", &ladder.roc_curve, RED),
        ],
        true,
    )?;
    curve_plot(
        &dir.join("pr.svg"),
        "precision-recall (held out)",
        "recall",
        "precision",
        &[
            ("model", &model.pr_curve, BLUE),
            ("ladder only", &ladder.pr_curve, RED),
        ],
        false,
    )?;
    let cal: Vec<(f64, f64)> = model
        .calibration
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.mean_predicted, b.observed_rate))
        .collect();
    curve_plot(
        &dir.join("calibration.svg"),
        "calibration (held out)",
        "mean predicted probability",
        "observed purchase rate",
        &[("model", &cal, BLUE)],
        true,
    )?;
    coefficient_plot(&dir.join("coefficients.svg"), names, coefficients)?;
    Ok(())
}
