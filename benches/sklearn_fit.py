"""Fits scikit-learn's LogisticRegression(lbfgs) on the matrix benches/train.rs
wrote, standardized the way rung standardizes (population standard deviation),
with C = 1/alpha to match linfa-logistic's objective. Prints seconds and AUC."""
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

x_path, y_path, cols, alpha = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
x = np.fromfile(x_path, dtype="<f8").reshape(-1, cols)
y = np.fromfile(y_path, dtype=np.uint8).astype(bool)
scale = x.std(axis=0)
scale[scale <= 1e-12] = 1.0
z = (x - x.mean(axis=0)) / scale
start = time.perf_counter()
model = LogisticRegression(solver="lbfgs", C=1.0 / alpha, max_iter=1000).fit(z, y)
seconds = time.perf_counter() - start
auc = roc_auc_score(y, model.decision_function(z))
print(f"scikit-learn (lbfgs): seconds {seconds:.2f} auc {auc:.4f} iterations {int(model.n_iter_[0])}")
