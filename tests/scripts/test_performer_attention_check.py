"""scripts/performer_attention_check.py: the statistics it reports for a Performer layer."""

import importlib.util
from pathlib import Path

import pytest
import torch

from attention_zoo.performer import PerformerAttention, PerformerHP

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "performer_attention_check.py"
_spec = importlib.util.spec_from_file_location("performer_attention_check", _PATH)
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

SKYFORMER_FORM = dict(nb_features=16, qk_scale="d", key_max="batch", stabiliser=1e-4, padded_keys=True)


def _layer(**hp):
    torch.manual_seed(0)
    return PerformerAttention(8, 2, 16, PerformerHP(**hp))


def _mask(b=3, length=12, real=(12, 7, 5)):
    return torch.arange(length)[None, :] < torch.tensor(real)[:, None]


def test_equal_features_give_uniform_weights_and_the_stabilisers_exact_share():
    # q = k = 0: every feature is m^-1/2 (1 + eps), so the weights are uniform over the counted
    # keys, the stabiliser carries eps / (1 + eps) of each normaliser and, with padded keys
    # counted, the padded share is exactly (L - n_real) / L.
    attn = _layer(**SKYFORMER_FORM)
    q = torch.zeros(3, 2, 12, 4)
    mask = _mask()
    s = check.layer_stats(attn, q, q, mask, explicit=3)
    eps = 1e-4
    assert s["stab"] == pytest.approx(eps / (1 + eps), rel=1e-9)
    assert s["feat"] == pytest.approx(1 / (1 + eps), rel=1e-9)
    # per-query average over real queries: 12 of example 0 (pad 0), 7 of example 1, 5 of example 2
    want_pad = (12 * 0 + 7 * 5 / 12 + 5 * 7 / 12) / 24
    assert s["pad"] == pytest.approx(want_pad, rel=1e-9)
    assert s["spread"] == pytest.approx(1.0, rel=1e-9)
    assert s["spread*"] == pytest.approx(1.0, rel=1e-9)
    assert s["tv*"] == pytest.approx(0.0, abs=1e-12)
    assert s["real_keys"] == pytest.approx(8.0)


def test_padded_keys_excluded_in_the_papers_form():
    attn = _layer(nb_features=16, padded_keys=False, key_max="head")
    q = torch.zeros(3, 2, 12, 4)
    s = check.layer_stats(attn, q, q, _mask(), explicit=3)
    assert s["pad"] == 0.0
    assert s["spread"] == pytest.approx(1.0, rel=1e-9)


def test_a_large_batch_maximum_leaves_the_stabiliser_in_charge():
    # One key far out sets the batch-wide c; every other key's exp part underflows next to the
    # stabiliser, so the weights go uniform while the exact kernel stays peaked.
    attn = _layer(**SKYFORMER_FORM)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, 2, 12, 4, generator=g) * 3
    k = torch.randn(3, 2, 12, 4, generator=g) * 3
    k[2, 1, 0] = 60.0  # an outlier key in another example still sets everyone's c
    mask = torch.ones(3, 12, dtype=torch.bool)
    s = check.layer_stats(attn, q, k, mask, explicit=2)
    assert s["stab"] > 0.99 and s["spread"] > 0.99
    assert s["spread*"] < 0.9 and s["tv*"] > 0.05
    # with the key maximum per (batch, head) and no stabiliser, the features carry it all
    free = _layer(nb_features=16, qk_scale="d", key_max="head", stabiliser=0.0, padded_keys=True)
    s2 = check.layer_stats(free, q, k, mask, explicit=2)
    assert s2["stab"] == 0.0 and s2["spread"] < 0.99


def test_form_override_recomputes_the_same_layer_in_another_form():
    attn = _layer(**SKYFORMER_FORM)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, 2, 12, 4, generator=g) * 3
    k = torch.randn(3, 2, 12, 4, generator=g) * 3
    k[2, 1, 0] = 60.0
    mask = torch.ones(3, 12, dtype=torch.bool)
    per_head = check.with_form(attn, check.parse_form({"key_max": "head", "stabiliser": "0"}))
    assert (per_head.key_max, per_head.stabiliser) == ("head", 0.0)
    assert (attn.key_max, attn.stabiliser) == ("batch", 1e-4)  # the run's layer is untouched
    assert check.layer_stats(per_head, q, k, mask, explicit=2)["stab"] == 0.0
    assert check.layer_stats(attn, q, k, mask, explicit=2)["stab"] > 0.99
    assert check.parse_form({"padded_keys": "1"}) == {"padded_keys": True}
    assert check.parse_form({"padded_keys": "0"}) == {"padded_keys": False}
    with pytest.raises(SystemExit, match="unknown field"):
        check.parse_form({"nb_features": "4"})
    with pytest.raises(SystemExit, match="key_max must be one of"):  # a typo is not read as "head"
        check.parse_form({"key_max": "bach"})
    with pytest.raises(SystemExit, match="padded_keys must be bool"):
        check.parse_form({"padded_keys": "maybe"})


def test_a_run_without_a_checkpoint_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match="no checkpoint.pt"):
        check.check_run(tmp_path, {}, {}, explicit=1, batches=1)


@pytest.mark.parametrize("argv, message", [
    (["RUN", "--set", "n"], "error: --set expects key=value"),
    (["RUN", "--set", "n=2k"], "error: --set: integer values only"),
    (["RUN", "--explicit", "0"], "--explicit and --batches must be >= 1"),
    (["RUN", "--form", "key_max=bach"], "--form: performer: key_max must be one of"),  # before any data is read
])
def test_malformed_arguments_are_one_clear_error(argv, message, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["performer_attention_check.py", *argv])
    with pytest.raises(SystemExit, match=message):
        check.main()
