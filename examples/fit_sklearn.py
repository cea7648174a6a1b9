"""Check rung's model with scikit-learn on the very examples rung fitted.

    rung train --events events.csv --out model.json --examples-out examples.csv
    python examples/fit_sklearn.py examples.csv model.metrics.json

The CSV holds one row per point-in-time example: visitor_id, cutoff, split,
label, ladder_score, then every model feature in the model's order. This
fits LogisticRegression the way rung does — features standardized with the
fitted rows' mean and population standard deviation, L2 on the standardized
coefficients with C = 1 / (l2_per_example x fitted rows) — and prints its
held-out ROC AUC beside the one rung reported in the metrics file:

- time split: fitted on the train, validation and final_only rows (what
  rung's final model is fitted on), judged on the test rows;
- k folds (split is the fold number): one fit per fold, judged on the pooled
  out-of-fold predictions.

Trained with --interactions pairwise (the metrics file says so), rung also
weighs every product z_i * z_j (i <= j) of the features standardized on the
fitted rows; this forms the same products before fitting.

Trained with --class-weight balanced, rung weighs positives; this does not.
"""

import csv
import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score


def read_examples(path):
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        splits, labels, features = [], [], []
        for row in rows:
            splits.append(row[2])
            labels.append(row[3] == "1")
            features.append([float(v) for v in row[5:]])
    return header[5:], np.array(splits), np.array(labels), np.array(features)


def standardization(x):
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale <= 1e-12] = 1.0
    return mean, scale


def with_products(x, mean, scale):
    z = (x - mean) / scale
    i, j = np.triu_indices(x.shape[1])
    return np.hstack([x, z[:, i] * z[:, j]])


def fit_and_predict(x_fit, y_fit, x_held, l2_per_example, pairwise):
    if pairwise:
        mean, scale = standardization(x_fit)
        x_fit, x_held = with_products(x_fit, mean, scale), with_products(x_held, mean, scale)
    mean, scale = standardization(x_fit)
    model = LogisticRegression(C=1.0 / (l2_per_example * len(y_fit)), max_iter=5000, tol=1e-8)
    model.fit((x_fit - mean) / scale, y_fit)
    return model.decision_function((x_held - mean) / scale)


def main(examples_path, metrics_path):
    names, split, y, x = read_examples(examples_path)
    with open(metrics_path) as f:
        metrics = json.load(f)
    l2 = metrics["chosen_l2_per_example"]
    pairwise = metrics.get("interactions") == "pairwise"
    held_out = metrics["held_out"]
    if held_out == "test":
        fit = np.isin(split, ["train", "validation", "final_only"])
        test = split == "test"
        auc = roc_auc_score(y[test], fit_and_predict(x[fit], y[fit], x[test], l2, pairwise))
        rows = f"fitted on {fit.sum()} rows, judged on {test.sum()} test rows"
    else:
        scores = np.zeros(len(y))
        for fold in np.unique(split):
            held = split == fold
            scores[held] = fit_and_predict(x[~held], y[~held], x[held], l2, pairwise)
        auc = roc_auc_score(y, scores)
        rows = f"{len(np.unique(split))} folds, pooled out-of-fold over {len(y)} rows"
    terms = " and their pairwise products" if pairwise else ""
    print(f"{len(names)} features{terms}, L2 per example {l2:g}; {rows}")
    print(f"ROC AUC: scikit-learn {auc:.4f}, rung {metrics[held_out]['roc_auc']:.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
