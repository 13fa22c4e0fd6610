import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run large-size tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="large size: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def orthogonal(n, rng):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def with_spectrum(lams, rng):
    """``U diag(λ) Uᵀ`` with a random orthogonal U (exactly symmetric)."""
    u = orthogonal(len(lams), rng)
    k = (u * np.asarray(lams)) @ u.T
    return (k + k.T) / 2, u


def rbf_problem(n, m, r, seed=0, d=4, scale=3.0):
    """A well-conditioned joint kernel over n train and m test points, targets and inits."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + m, d))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    k = np.exp(-d2 / scale) + 0.3 * (x @ x.T) / d + 0.05 * np.eye(n + m)
    y = rng.normal(size=(n, r)) if r else rng.normal(size=n)
    f0 = 0.1 * rng.normal(size=y.shape)
    g0 = 0.1 * rng.normal(size=(m,) + y.shape[1:])
    return k[:n, :n].copy(), k[n:, :n].copy(), k[n:, n:].copy(), y, f0, g0


@pytest.fixture
def problem():
    return rbf_problem(40, 9, 3)
