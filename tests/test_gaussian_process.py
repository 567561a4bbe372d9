"""The campaign optimizer's Gaussian process is the model scikit-learn's regressor fits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from xbar.training.gaussian_process import Bounds, MaternGP


def _sklearn(x: np.ndarray, y: np.ndarray, dims: int, seed: int) -> GaussianProcessRegressor:
    kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern(
        length_scale=np.full(dims, 0.5), length_scale_bounds=(0.05, 200.0), nu=2.5
    ) + WhiteKernel(1e-2, (1e-6, 1.0))
    gp = GaussianProcessRegressor(
        kernel, normalize_y=True, n_restarts_optimizer=1, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gp.fit(x, y)


@pytest.mark.parametrize("ard", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_fit_and_prediction_as_scikit_learn(ard: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(40, 3))
    y = np.sin(4 * x[:, 0]) + x[:, 1] ** 2 + 0.05 * rng.normal(size=40)
    options = rng.uniform(size=(25, 3))
    dims = 3 if ard else 1
    reference = _sklearn(x, y, dims, seed)
    ours = MaternGP(dims, Bounds()).fit(x, y, restarts=1, seed=seed)
    np.testing.assert_allclose(np.exp(ours.theta), np.exp(reference.kernel_.theta), rtol=1e-3)
    mean, std = ours.predict(options)
    ref_mean, ref_std = reference.predict(options, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(std, ref_std, rtol=1e-4, atol=1e-6)
    lml, _ = ours.log_marginal_likelihood(ours.theta)
    assert lml == pytest.approx(reference.log_marginal_likelihood_value_, rel=1e-6)


def test_gradient_is_the_likelihoods_slope() -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(20, 2))
    y = x[:, 0] - 2 * x[:, 1] + 0.1 * rng.normal(size=20)
    gp = MaternGP(2).fit(x, y, optimize=False)
    theta = np.log([0.7, 0.3, 0.9, 0.05])
    _, grad = gp.log_marginal_likelihood(theta)
    step = 1e-6
    for i in range(len(theta)):
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        slope = (gp.log_marginal_likelihood(up)[0] - gp.log_marginal_likelihood(down)[0]) / (
            2 * step
        )
        assert grad[i] == pytest.approx(slope, rel=1e-4, abs=1e-6)


def test_fixed_hyperparameters_are_kept_and_bad_shapes_refused() -> None:
    x = np.linspace(0, 1, 8)[:, None]
    gp = MaternGP(1)
    gp.theta = np.log([2.0, 0.2, 1e-3])
    gp.fit(x, x[:, 0] ** 2, optimize=False)
    np.testing.assert_allclose(np.exp(gp.theta), [2.0, 0.2, 1e-3])
    mean, _ = gp.predict(x)
    np.testing.assert_allclose(mean, x[:, 0] ** 2, atol=0.02)
    with pytest.raises(ValueError, match="do not describe the same points"):
        gp.fit(x, np.zeros(3))
    with pytest.raises(ValueError, match="at least one length scale"):
        MaternGP(0)
