"""The registry, and one registry-driven test that walks every variant."""

import dataclasses

import pytest
import torch

import attention_zoo
from attention_zoo.registry import HyperparameterError, UnknownVariantError

DIM, HEADS, MAX_LEN = 32, 2, 96


def test_unknown_variant_lists_valid_names():
    with pytest.raises(UnknownVariantError) as e:
        attention_zoo.build("nope", DIM, HEADS, MAX_LEN)
    assert "softmax" in str(e.value) and "polarity" in str(e.value)


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(HyperparameterError) as e:
        attention_zoo.build("polarity", DIM, HEADS, MAX_LEN, beta=2)
    assert "alpha" in str(e.value) and "beta" in str(e.value)


def test_hyperparameters_are_typed_and_checked():
    assert attention_zoo.make_hparams("polarity", alpha="5").alpha == 5.0
    with pytest.raises(HyperparameterError, match="alpha"):
        attention_zoo.make_hparams("polarity", alpha="lots")
    with pytest.raises(HyperparameterError, match="alpha"):
        attention_zoo.make_hparams("polarity", alpha=-1)
    with pytest.raises(HyperparameterError, match="backend"):
        attention_zoo.make_hparams("polarity", backend="cuda-magic")


def test_parse_spec():
    assert attention_zoo.parse_spec("polarity:alpha=5,backend=torch") == ("polarity", {"alpha": "5", "backend": "torch"})
    assert attention_zoo.parse_spec("softmax") == ("softmax", {})
    with pytest.raises(HyperparameterError):
        attention_zoo.parse_spec("polarity:alpha")


def test_every_variant_has_a_typed_default_and_complexity():
    for name in attention_zoo.names():
        v = attention_zoo.get(name)
        assert dataclasses.is_dataclass(v.hparams)
        assert v.time and v.memory and v.summary


def _build(name, seed=0):
    torch.manual_seed(seed)
    return attention_zoo.build(name, DIM, HEADS, MAX_LEN).double()


@pytest.mark.parametrize("name", attention_zoo.names())
def test_variant_shape_finite_and_backward_reaches_every_parameter(name):
    m = _build(name)
    l = 75  # not a multiple of common block sizes
    x = torch.randn(3, l, DIM, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, l, dtype=torch.bool)
    mask[1, 50:] = False
    mask[2, 7:] = False
    y = m(x, mask)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y[mask].pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"{name}: no gradient reaches {missing}"


@pytest.mark.parametrize("name", attention_zoo.names())
def test_padding_does_not_leak(name):
    m = _build(name).eval()
    l, real = 80, 53
    x = torch.randn(2, l, DIM, dtype=torch.float64)
    mask = torch.zeros(2, l, dtype=torch.bool)
    mask[:, :real] = True
    x2 = x.clone()
    x2[:, real:] = 50 * torch.randn_like(x2[:, real:])
    with torch.no_grad():
        # Some variants sample at every forward (informer's keys, skyformer's landmarks, reformer's
        # hashes): the same seed before each forward makes the two calls draw the same samples.
        torch.manual_seed(1)
        base = m(x, mask)
        torch.manual_seed(1)
        moved = m(x2, mask)
    torch.testing.assert_close(moved[:, :real], base[:, :real], rtol=1e-9, atol=1e-9)
