//! Training speed at scale: about 1,000,000 point-in-time examples × 42
//! features from simulated journeys, fitted by rung (linfa-logistic) and,
//! when Python with scikit-learn is at hand, by scikit-learn's
//! LogisticRegression(solver="lbfgs") on the very same matrix.
//!
//! Run: cargo bench --bench train   (ROWS=200000 for a quicker look)

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use rung::domain::Taxonomy;
use rung::scoring::feature_names;
use rung::simulator::{simulate, SimConfig};
use rung::training::examples::{build, data_end, Cutoffs};
use rung::training::fit::{fit, FitOptions};
use rung::training::metrics::roc_auc;
use rung::training::pipeline::predict;

fn main() {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1_000_000);
    let taxonomy = Taxonomy::builtin();
    let t = Instant::now();
    // About 1.7 examples per simulated visitor with page-view cut-offs.
    let journeys = simulate(&SimConfig {
        visitors: rows * 10 / 16,
        days: 365.0,
        ..SimConfig::default()
    });
    let visitors: Vec<_> = journeys
        .iter()
        .map(|j| (j.visitor_id.clone(), j.resolve(&taxonomy)))
        .collect();
    drop(journeys);
    let all = build(
        &taxonomy,
        &visitors,
        &Cutoffs::PageView { seed: 1 },
        7 * 86_400_000,
        data_end(&visitors),
        &|_| {},
    );
    let ex = all.select(|i| i < rows);
    println!(
        "examples: {} × {} features ({} positive), built in {:.1} s",
        ex.len(),
        ex.x.ncols(),
        ex.positives(),
        t.elapsed().as_secs_f64()
    );

    let names = feature_names(&taxonomy);
    let mut opts = FitOptions {
        alpha: 1.0,
        ..FitOptions::default()
    };
    if let Some(tol) = std::env::var("TOL").ok().and_then(|t| t.parse().ok()) {
        opts.tolerance_per_row = tol;
    }
    let t = Instant::now();
    let fitted = fit(&ex.x, &ex.y, &names, &opts).expect("fit");
    let rung_secs = t.elapsed().as_secs_f64();
    let rung_auc = roc_auc(&predict(&fitted, &ex), &ex.y).unwrap_or(f64::NAN);
    println!(
        "rung (linfa-logistic, gradient tolerance {:e} × rows, at most {} iterations): {rung_secs:.2} s, ROC AUC {rung_auc:.4}",
        opts.tolerance_per_row, opts.max_iterations
    );

    let mut fused_opts = opts;
    fused_opts.tolerance_per_row = std::env::var("FUSED_TOL")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1e-4);
    let t = Instant::now();
    let fused = rung::training::solver::fit_fused(&ex.x, &ex.y, &fused_opts).expect("fused fit");
    let fused_secs = t.elapsed().as_secs_f64();
    let fused_auc = roc_auc(&predict(&fused, &ex), &ex.y).unwrap_or(f64::NAN);
    println!(
        "rung (fused objective, argmin L-BFGS, mean-gradient tolerance {:e}): {fused_secs:.2} s, ROC AUC {fused_auc:.4}",
        fused_opts.tolerance_per_row
    );

    // The same matrix for scikit-learn, as raw little-endian f64 and u8.
    let dir = tempfile::tempdir().unwrap();
    let xf = dir.path().join("x.f64");
    let yf = dir.path().join("y.u8");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&xf).unwrap());
    for v in ex.x.iter() {
        w.write_all(&v.to_le_bytes()).unwrap();
    }
    w.flush().unwrap();
    std::fs::write(&yf, ex.y.iter().map(|&b| u8::from(b)).collect::<Vec<_>>()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sklearn_fit.py");
    let out = Command::new("python3")
        .args([
            script,
            xf.to_str().unwrap(),
            yf.to_str().unwrap(),
            &ex.x.ncols().to_string(),
            "1.0",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            print!("{text}");
            let field = |k: &str| {
                text.split_whitespace()
                    .skip_while(|w| *w != k)
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            };
            if let (Some(secs), Some(auc)) = (field("seconds"), field("auc")) {
                println!(
                    "ratio to scikit-learn: linfa {:.2}×, fused {:.2}×; ROC AUC difference: linfa {:+.4}, fused {:+.4}",
                    rung_secs / secs,
                    fused_secs / secs,
                    rung_auc - auc,
                    fused_auc - auc
                );
            }
        }
        Ok(o) => println!(
            "scikit-learn run failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("python3 not available ({e}); scikit-learn comparison skipped"),
    }
}
