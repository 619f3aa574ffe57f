"""The training loop learns, schedules follow their definitions, configs resolve."""

import json
import math

import pytest
import torch

from lra import protocols
from lra.config import ConfigError, TrainConfig, check
from lra.train import make_optimizer, make_schedule, train
from tasks import DataError, get_task


def test_quick_listops_beats_majority_class(tmp_path):
    cfg = protocols.resolve("listops", "quick", "polarity", {"alpha": 3}, seed=0,
                            overrides={"train.steps": 150, "train.eval_every": 50})
    result = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=lambda *_: None)
    assert result["status"] == "finished"
    assert result["test_acc"] > result["test_majority_rate"] + 0.05, result


def _lrs(t: TrainConfig, n):
    opt = make_optimizer(torch.nn.Linear(2, 2), t)
    sched = make_schedule(opt, t)
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_onecycle_peaks_at_warmup():
    lrs = _lrs(TrainConfig(steps=100, warmup=20, lr=1e-3, schedule="onecycle"), 100)
    # OneCycleLR ends its warm-up phase at step pct_start * total - 1
    assert max(range(100), key=lrs.__getitem__) == 19
    assert lrs[19] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-3 / 25)
    assert lrs[-1] < 1e-5


def test_metrics_log_the_rate_each_step_used(tmp_path):
    """The logged lr is the one the evaluated step trained with: OneCycleLR's final value at the
    last step (the schedule's next value, past its end, can be negative)."""
    cfg = protocols.resolve("listops", "quick", "softmax", seed=0,
                            overrides={"train.steps": 20, "train.eval_every": 10, "train.warmup": 4})
    train(cfg, tmp_path, torch.device("cpu"), progress=False, log=lambda *_: None)
    (path,) = tmp_path.rglob("metrics.jsonl")
    metrics = [json.loads(line) for line in path.read_text().splitlines()]
    lrs = _lrs(cfg.train, 20)
    assert [m["step"] for m in metrics] == [10, 20]
    assert [m["lr"] for m in metrics] == pytest.approx([lrs[9], lrs[19]])
    assert metrics[-1]["lr"] == pytest.approx(cfg.train.lr / 25 / 1e4)


def test_rsqrt_and_cosine_match_lra_definitions():
    lrs = _lrs(TrainConfig(steps=100, warmup=10, lr=0.05, schedule="rsqrt"), 50)
    for step in (0, 5, 9, 10, 40):
        s = step + 1
        assert lrs[step] == pytest.approx(0.05 * min(1, s / 10) / math.sqrt(max(s, 10)))
    lrs = _lrs(TrainConfig(steps=100, warmup=10, lr=1e-3, schedule="cosine"), 100)
    assert lrs[49] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 50 / 100)))


def test_protocol_resolution_and_overrides():
    cfg = protocols.resolve("text", "skyformer", "softmax")
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.warmup, cfg.data["seq_len"]) == (32, 1e-4, 80, 4000)
    assert cfg.data["pad_to"] == 4096 and get_task("text").seq_len(get_task("text").params(cfg.data)) == 4096
    assert protocols.resolve("listops", "skyformer", "softmax").data == {"seq_len": 2048}  # padded as theirs
    cfg = protocols.resolve("image", "skyformer", "softmax", overrides={"train.lr": "3e-4", "model.layers": "4"})
    assert cfg.train.lr == 3e-4 and cfg.model.layers == 4 and cfg.train.eval_every == 50
    with pytest.raises(ConfigError, match="must be int"):
        protocols.resolve("image", "skyformer", "softmax", overrides={"model.layers": "2.5"})


def test_config_hash_depends_on_what_is_computed():
    a = protocols.resolve("listops", "quick", "softmax")
    b = protocols.resolve("listops", "quick", "softmax", seed=1)
    c = protocols.resolve("listops", "quick", "softmax")
    assert a.hash() == c.hash() != b.hash()


def test_data_overrides_take_the_parameter_type():
    """``--set data.contour_length=6`` and ``contour_length = 6`` in a grid file are one run."""
    given = [protocols.resolve("pathfinder", "skyformer", "softmax", overrides={"data.contour_length": v})
             for v in ("6", 6, " 6")]
    assert all(c.data == {"contour_length": 6} for c in given)
    assert len({c.hash() for c in given}) == 1
    assert given[0].hash() != protocols.resolve("pathfinder", "skyformer", "softmax").hash()
    text = protocols.resolve("text", "skyformer", "softmax", overrides={"data.seq_len": "1000"})
    assert text.data == {"seq_len": 1000, "pad_to": 4096}
    for bad in ("six", "6.5", "true"):
        with pytest.raises(ConfigError, match="data.contour_length must be int"):
            protocols.resolve("pathfinder", "skyformer", "softmax", overrides={"data.contour_length": bad})
    with pytest.raises(DataError, match="unknown data parameter 'length'"):  # still rejected where it was
        get_task("pathfinder").params(protocols.resolve(
            "pathfinder", "skyformer", "softmax", overrides={"data.length": "3"}).data)



def test_embedding_init_and_padded_mean_pooling():
    """``model.embed_std`` draws the token embedding from N(0, std^2) (unset: nn.Embedding's N(0, 1),
    and the config's dict, so its hash, is what it was before the field existed);
    ``model.pooling=mean_padded`` zeroes padded positions and averages over the padded length."""
    import torch

    from lra.model import Encoder

    # the skyformer protocol takes the Skyformer code's init and pooling; the earlier model is one
    # override away, and its config's dict (so its hash) is what it was before the field existed
    ref = protocols.resolve("listops", "skyformer", "softmax")
    assert ref.model.embed_std == 0.02 and ref.to_dict()["model"]["embed_std"] == 0.02
    assert ref.model.pooling == "mean_padded"
    base = protocols.resolve("listops", "skyformer", "softmax",
                             overrides={"model.embed_std": "none", "model.pooling": "mean"})
    assert base.model.embed_std is None and "embed_std" not in base.to_dict()["model"]
    assert ref.hash() != base.hash()
    assert protocols.resolve("listops", "nystromformer", "softmax").model.embed_std is None  # not read for it
    with pytest.raises(ConfigError, match="model.embed_std must be > 0"):
        check(protocols.resolve("listops", "skyformer", "softmax", overrides={"model.embed_std": "0"}))
    with pytest.raises(ConfigError, match="model.pooling must be one of"):
        protocols.resolve("listops", "skyformer", "softmax", overrides={"model.pooling": "max"})

    torch.manual_seed(0)
    enc = Encoder(ref.model, vocab_size=5000, seq_len=12, mask_zero=True).eval()
    assert abs(enc.tok.weight.std().item() - 0.02) < 0.002
    assert Encoder(base.model, vocab_size=5000, seq_len=12, mask_zero=True).tok.weight.std().item() > 0.9
    tokens = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9]])
    with torch.no_grad():
        pooled = enc(tokens)
        x = enc.drop(enc.tok(tokens) + enc.pos[:, :12])
        mask = tokens > 0
        for block in enc.blocks:
            x = block(x, mask)
        x = enc.ln(x) * mask[..., None]
    torch.testing.assert_close(pooled, x.sum(1) / 12)  # the first row: 3 real tokens over 12


@pytest.mark.parametrize("rule, evals, kept", [
    # (step, val acc) every 100 of 1,000 steps, threshold 200
    ("after", [(100, 0.5), (200, 0.3), (300, 0.4), (400, 0.35)], [200, 300]),
    ("overall", [(100, 0.5), (200, 0.3), (300, 0.4), (400, 0.35)], []),  # the early peak is never beaten
    ("overall", [(100, 0.3), (200, 0.5), (300, 0.45), (400, 0.6), (500, 0.6)], [400]),  # 200 is not past it
])
def test_best_checkpoint_rules(rule, evals, kept):
    """``after``: the best from the threshold on; ``overall`` (the Skyformer code): the best
    over every evaluation, kept only strictly past the threshold, else the final model is tested."""
    from lra.train import keeps_best

    t = TrainConfig(steps=1000, best_after=0.2, best_rule=rule)
    best, got = {"acc": -1.0, "step": 0, "state": None}, []
    for step, acc in evals:
        if keeps_best(t, step, acc, best):
            best = {"acc": acc, "step": step, "state": "weights"}
            got.append(step)
        best["seen"] = max(best.get("seen", -1.0), acc)
    assert got == kept
    assert protocols.resolve("listops", "skyformer", "softmax").train.best_rule == "overall"  # the Skyformer code's
    assert "best_rule" not in protocols.resolve("listops", "nystromformer", "softmax").to_dict()["train"]
    assert protocols.resolve("listops", "skyformer", "softmax",
                             overrides={"train.best_rule": rule}).to_dict()["train"].get("best_rule", "after") == rule
