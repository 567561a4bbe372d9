"""Gaussian-process regression for the campaign optimizer, without scikit-learn.

Importing scikit-learn costs about a second of CPU (it pulls in ``scipy.stats`` and
pandas): more than a whole ``xbar fab suggest`` may take. This module fits the same model
scikit-learn's ``GaussianProcessRegressor`` fits for the kernel
``ConstantKernel · Matern(ν = 5/2) + WhiteKernel`` with ``normalize_y=True`` and
``alpha = 1e-10``, the same way: L-BFGS-B on the log marginal likelihood over the log
hyperparameters, from the initial values and from ``restarts`` starts drawn uniformly
within the log bounds by ``numpy.random.RandomState(seed)``, keeping the best optimum
(scikit-learn's ``_gpr.py``, version 1.9). ``tests/test_gaussian_process.py`` checks that
the two agree. Only SciPy's ``linalg`` and ``optimize`` are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize

JITTER = 1e-10
"""Added to the training kernel's diagonal (scikit-learn's default ``alpha``)."""

_SQRT5 = math.sqrt(5.0)


@dataclass(frozen=True)
class Bounds:
    """Initial value and (low, high) bounds of each hyperparameter."""

    constant: tuple[float, tuple[float, float]] = (1.0, (1e-2, 1e2))
    noise: tuple[float, tuple[float, float]] = (1e-2, (1e-6, 1.0))
    length: tuple[float, tuple[float, float]] = (0.5, (0.05, 200.0))


class MaternGP:
    """``c · Matérn5/2(x, x'; ℓ) + σ²·δ`` on standardised targets.

    ``dims`` length scales: 1 (one shared) or the input dimension (ARD). Hyperparameters
    are kept as ``theta = log [c, ℓ…, σ²]`` (scikit-learn's order).
    """

    def __init__(self, dims: int, bounds: Bounds | None = None) -> None:
        if dims < 1:
            raise ValueError(f"a GP needs at least one length scale, got dims = {dims}")
        b = bounds or Bounds()
        self.theta = np.log([b.constant[0], *([b.length[0]] * dims), b.noise[0]])
        self.bounds = np.log([b.constant[1], *([b.length[1]] * dims), b.noise[1]])  # (n_params, 2)
        self._x = np.zeros((0, 0))
        self._sq_each = np.zeros((0, 0, 0))
        self._sq_sum = np.zeros((0, 0))
        self._y = np.zeros(0)
        self._y_mean = 0.0
        self._y_std = 1.0
        self._factor = np.zeros((0, 0))
        self._alpha = np.zeros(0)

    # -- the kernel -------------------------------------------------------------------------
    def _unpack(self, theta: np.ndarray) -> tuple[float, np.ndarray, float]:
        e = np.exp(theta)
        return float(e[0]), e[1:-1], float(e[-1])

    def _matern(self, a: np.ndarray, b: np.ndarray, length: np.ndarray) -> np.ndarray:
        d = np.sqrt(_sq_distances(a / length, b / length))
        return (1.0 + _SQRT5 * d + (5.0 / 3.0) * d * d) * np.exp(-_SQRT5 * d)

    def _train_kernel(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The training kernel (jitter added) and its gradient in theta, (n, n, p)."""
        c, length, noise = self._unpack(theta)
        n = len(self._x)
        if len(length) == 1:
            sq = (self._sq_sum / length[0] ** 2)[:, :, None]
        else:
            sq = self._sq_each / length**2
        r = np.sqrt(sq.sum(-1))
        ex = np.exp(-_SQRT5 * r)
        m = (1.0 + _SQRT5 * r + (5.0 / 3.0) * r * r) * ex
        root = r[:, :, None] * _SQRT5
        d_length = c * (5.0 / 3.0) * sq * (root + 1.0) * ex[:, :, None]
        grad = np.concatenate(
            [(c * m)[:, :, None], d_length, (noise * np.eye(n))[:, :, None]], axis=2
        )
        k = c * m + noise * np.eye(n)
        k[np.diag_indices(n)] += JITTER
        return k, grad

    def log_marginal_likelihood(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Log marginal likelihood of the (standardised) training targets, and its
        gradient in theta; ``-inf`` where the kernel is not positive definite."""
        k, grad = self._train_kernel(theta)
        try:
            factor = cholesky(k, lower=True, check_finite=False)
        except LinAlgError:
            return -np.inf, np.zeros_like(theta)
        y = self._y
        alpha = cho_solve((factor, True), y, check_finite=False)
        lml = -0.5 * float(y @ alpha) - float(np.log(np.diag(factor)).sum())
        lml -= len(y) / 2 * math.log(2 * math.pi)
        inner = np.outer(alpha, alpha) - cho_solve(
            (factor, True), np.eye(len(y)), check_finite=False
        )
        return lml, 0.5 * np.einsum("ij,jik->k", inner, grad)

    # -- fit and predict ----------------------------------------------------------------
    def fit(
        self, x: np.ndarray, y: np.ndarray, optimize: bool = True, restarts: int = 1, seed: int = 0
    ) -> MaternGP:
        """Condition on (x, y); with ``optimize`` first choose the hyperparameters by
        maximum marginal likelihood (else keep the current ones)."""
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ValueError(f"x {x.shape} and y {y.shape} do not describe the same points")
        self._x = x
        self._sq_each = (x[:, None, :] - x[None, :, :]) ** 2  # per dimension, for every theta
        self._sq_sum = self._sq_each.sum(-1)
        self._y_mean = float(np.mean(y))
        std = float(np.std(y))
        self._y_std = std if std > 10 * np.finfo(float).eps else 1.0
        self._y = (y - self._y_mean) / self._y_std
        if optimize:
            starts = [self.theta]
            rng = np.random.RandomState(seed)
            starts += [rng.uniform(self.bounds[:, 0], self.bounds[:, 1]) for _ in range(restarts)]
            optima = [self._minimise(start) for start in starts]
            self.theta = min(optima, key=lambda o: o[1])[0]
        k, _ = self._train_kernel(self.theta)
        self._factor = cholesky(k, lower=True, check_finite=False)
        self._alpha = cho_solve((self._factor, True), self._y, check_finite=False)
        return self

    def _minimise(self, start: np.ndarray) -> tuple[np.ndarray, float]:
        def negative(theta: np.ndarray) -> tuple[float, np.ndarray]:
            lml, grad = self.log_marginal_likelihood(theta)
            return -lml, -grad

        bounds = [(float(low), float(high)) for low, high in self.bounds]
        result = minimize(negative, start, method="L-BFGS-B", jac=True, bounds=bounds)
        return np.asarray(result.x, float), float(result.fun)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (noise included) at the rows of x."""
        c, length, noise = self._unpack(self.theta)
        cross = c * self._matern(np.asarray(x, float), self._x, length)
        mean = cross @ self._alpha * self._y_std + self._y_mean
        v = solve_triangular(self._factor, cross.T, lower=True, check_finite=False)
        var = c + noise - np.einsum("ij,ij->j", v, v)
        return mean, np.sqrt(np.maximum(var, 0.0)) * self._y_std


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of a and b, from the differences
    (exactly 0 between equal rows, as SciPy's ``cdist`` gives them)."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
