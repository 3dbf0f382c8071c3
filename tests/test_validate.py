"""Bad input fails at the public boundary with a message that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from probgen import BNN, Categorical, fit_nuts, fit_svi


def _model(in_features: int = 2) -> BNN:
    return BNN(nn.Sequential(nn.Linear(in_features, 4), nn.Tanh(), nn.Linear(4, 1)))


X = torch.linspace(-1, 1, 20).reshape(10, 2)
Y = torch.linspace(0, 1, 10)
X_NAN = X.clone()
X_NAN[3, 1] = float("nan")
Y_INF = Y.clone()
Y_INF[0] = float("inf")
FITS = [
    pytest.param(lambda m, x, y, **kw: fit_svi(m, x, y, num_steps=1, progress_bar=False, **kw), id="svi"),
    pytest.param(lambda m, x, y, **kw: fit_nuts(m, x, y, num_warmup=1, num_samples=1, progress_bar=False, **kw), id="nuts"),
]


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize(
    "x, y, error, match",
    [
        (X, Y[:7], ValueError, "same number of rows, got 10 and 7"),
        (X_NAN, Y, ValueError, "x contains 1 NaN or infinite"),
        (X, Y_INF, ValueError, "y contains 1 NaN or infinite"),
        (X[:, 0], Y, ValueError, r"x must be 2-D, got shape \(10,\).*reshape"),
        (torch.randn(10, 3), Y, ValueError, "x has 3 features but the network expects 2"),
        (np.array([["a", "b"]] * 10), Y, TypeError, "x must hold real numbers"),
        (X, np.array(["u"] * 10), TypeError, "y must hold real numbers"),
        (X[:0], Y[:0], ValueError, "x is empty"),
    ],
    ids=["lengths", "nan-x", "inf-y", "1d-x", "width", "str-x", "str-y", "empty"],
)
def test_bad_data_is_named(fit, x, y, error, match):
    with pytest.raises(error, match=match):
        fit(_model(), x, y)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: fit_svi(_model(), X, Y, guide="fullrank"), ValueError, "unknown guide 'fullrank'; expected one of"),
        (lambda: fit_svi(_model(), X, Y, elbo="renyi"), ValueError, "unknown elbo 'renyi'"),
        (lambda: fit_nuts(_model(), X, Y, backend="stan"), ValueError, "unknown backend 'stan'; expected one of"),
        (lambda: fit_nuts(_model(), X, Y, num_chains=0), ValueError, "num_chains must be a positive int, got 0"),
        (lambda: fit_nuts(_model(), X, Y, num_samples=2.5), TypeError, "num_samples must be an int"),
        (lambda: fit_nuts(_model(), X, Y, target_accept_prob=1.5), ValueError, "target_accept_prob must lie in"),
        (lambda: fit_svi(_model(), X, Y, lr=-1.0), ValueError, "lr must be a finite positive number"),
        (lambda: fit_svi(_model(), X, Y, seed="zero"), TypeError, "seed must be an int or None"),
        (lambda: fit_svi(nn.Linear(2, 1), X, Y), TypeError, "cannot be called with 2 positional.*probgen.BNN"),
        (lambda: fit_nuts(_model(), X, None), ValueError, "y is required"),
        (lambda: BNN("net"), TypeError, "net must be a torch.nn.Module"),
        (lambda: BNN(nn.Tanh()), ValueError, "net has no parameters"),
    ],
    ids=["guide", "elbo", "backend", "num_chains", "float-count", "accept", "lr", "seed", "model", "no-y", "net-type", "no-params"],
)
def test_bad_options_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    "y, error, match",
    [
        (torch.tensor([0, 1, 3]), ValueError, r"labels in 0\.\.2, got values from 0 to 3"),
        (torch.tensor([0.0, 1.5, 1.0]), TypeError, "integer class labels"),
    ],
    ids=["out-of-range", "non-integer"],
)
def test_bad_class_labels_are_named(y, error, match):
    model = BNN(nn.Linear(2, 3), likelihood=Categorical(3))
    with pytest.raises(error, match=match):
        fit_svi(model, torch.randn(3, 2), y, num_steps=1)


def test_pandas_input_is_accepted():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X.numpy(), columns=["a", "b"])
    result = fit_svi(_model(), frame, pd.Series(Y.numpy()), num_steps=2, num_samples=2, seed=0, progress_bar=False)
    assert result.x.shape == (10, 2)
