"""Makes the fixture that pins rung's linfa fit against scikit-learn.

Writes logistic_reference.csv (x1,x2,x3,y) and prints scikit-learn's
coefficients on the same standardization rung uses (population standard
deviation), with C = 1/alpha, which matches linfa-logistic's objective
(sum of log losses + alpha/2 * |w|^2, intercept unpenalized).
Run: python3 tests/data/make_logistic_reference.py  (needs numpy, scikit-learn)
"""
import numpy as np
from sklearn.linear_model import LogisticRegression

rng = np.random.default_rng(20261123)
n = 400
x = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
z = -2.0 + 1.0 * x[:, 0] - 0.5 * x[:, 1] + 0.0 * x[:, 2]
y = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
with open(__file__.replace("make_logistic_reference.py", "logistic_reference.csv"), "w") as f:
    f.write("x1,x2,x3,y\n")
    for row, label in zip(x, y):
        f.write(f"{float(row[0])!r},{float(row[1])!r},{float(row[2])!r},{int(label)}\n")

alpha = 1.0
xs = (x - x.mean(axis=0)) / x.std(axis=0)
m = LogisticRegression(C=1.0 / alpha, tol=1e-12, max_iter=10_000).fit(xs, y)
print("positives", int(y.sum()), "of", n)
print("coefficients", [float(c) for c in m.coef_[0]])
print("intercept", float(m.intercept_[0]))
