"""Checkpoint / resume: a run killed at any moment and resumed ends exactly as an
uninterrupted run of the same seed (CPU); metrics rows are never duplicated; failures
and locks are recorded, not silently lost."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lra import checkpoint, protocols, records
from lra.checkpoint import RunLock, RunLocked
from lra.config import ConfigError
from lra.train import train

ROOT = Path(__file__).resolve().parents[2]
TINY = {"data.n_train": 200, "data.n_val": 50, "data.n_test": 50, "data.max_length": 40, "data.seq_len": 40,
        "model.layers": 1, "train.warmup": 5, "model.dropout": 0.1,  # dropout on: the RNG must be restored too
        "train.best_after": 0.5}  # the tested weights come from after any kill


def tiny(steps=120, eval_every=10, seed=0, **over):
    return protocols.resolve("listops", "quick", "softmax", seed=seed,
                             overrides={**TINY, "train.steps": steps, "train.eval_every": eval_every, **over})


@pytest.fixture
def one_thread():
    # The same thread count as the killed worker: CPU float results may depend on it.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def quiet(*_):
    pass


def run_dir(out, cfg):
    return Path(out) / records.run_dir_name(cfg.task, cfg.variant_label(), cfg.protocol, cfg.seed, cfg.hash())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every resumed run must reproduce."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("reference")
        cfg = tiny()
        result = train(cfg, out, torch.device("cpu"), progress=False, log=quiet)
    finally:
        torch.set_num_threads(old)
    assert result["status"] == "finished"
    return result, records.read_jsonl(run_dir(out, cfg) / records.METRICS)


def same_record(result, metrics, ref_result, ref_metrics):
    for key in ("status", "test_acc", "test_loss", "best_val_acc", "best_step", "config_hash"):
        assert result[key] == ref_result[key], key
    assert [m["step"] for m in metrics] == [m["step"] for m in ref_metrics] == list(range(10, 121, 10))
    for row, ref in zip(metrics, ref_metrics):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert row[key] == ref[key], (row["step"], key)


def start_worker(cfg, out):
    return subprocess.Popen([sys.executable, "-m", "lra.worker", "--out", str(out), "--device", "cpu",
                             "--threads", "1", json.dumps(cfg.to_dict())], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_run_resumes_to_the_uninterrupted_result(sig, reference, tmp_path, one_thread):
    cfg = tiny()
    d = run_dir(tmp_path, cfg)
    proc = start_worker(cfg, tmp_path)
    deadline = time.time() + 120
    while not (d / checkpoint.CHECKPOINT).exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 130), output
    assert not (d / records.RESULT).exists()  # killed mid-training, not after it
    killed_at = checkpoint.load(d / checkpoint.CHECKPOINT)["step"]
    assert 10 <= killed_at < 120

    result = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet)
    same_record(result, records.read_jsonl(d / records.METRICS), *reference)
    assert result["resumed_from"] == [killed_at]
    assert not (d / checkpoint.CHECKPOINT).exists()  # deleted once finished
    assert not checkpoint.is_locked(d)


def test_kill_between_metrics_row_and_checkpoint(reference, tmp_path, one_thread, monkeypatch):
    """The row written just before a kill is truncated on resume, then written again once."""
    cfg = tiny()
    real_save, calls = checkpoint.save, []

    def save_then_die(path, obj):
        calls.append(obj["step"])
        if obj["step"] == 30:
            raise KeyboardInterrupt  # the metrics row of step 30 is on disk, its checkpoint is not
        real_save(path, obj)

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet)
    d = run_dir(tmp_path, cfg)
    assert [m["step"] for m in records.read_jsonl(d / records.METRICS)] == [10, 20, 30]
    monkeypatch.setattr(checkpoint, "save", real_save)
    result = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet)
    same_record(result, records.read_jsonl(d / records.METRICS), *reference)
    assert result["resumed_from"] == [20]


def test_overall_best_rule_resumes_with_the_best_seen_so_far(tmp_path, one_thread, monkeypatch):
    """``train.best_rule=overall`` keeps weights only above every earlier evaluation, so the best
    validation seen before a kill travels in the checkpoint and the resumed run ends as an
    uninterrupted one."""
    cfg = tiny(**{"train.best_rule": "overall"})
    ref = train(cfg, tmp_path / "ref", torch.device("cpu"), progress=False, log=quiet)
    ref_metrics = records.read_jsonl(run_dir(tmp_path / "ref", cfg) / records.METRICS)
    real_save = checkpoint.save

    def save_then_die(path, obj):
        real_save(path, obj)
        if obj["step"] == 50:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", torch.device("cpu"), progress=False, log=quiet)
    d = run_dir(tmp_path / "cut", cfg)
    seen = checkpoint.load(d / checkpoint.CHECKPOINT)["best"]["seen"]
    assert seen == max(m["val_acc"] for m in ref_metrics if m["step"] <= 50)
    monkeypatch.setattr(checkpoint, "save", real_save)
    result = train(cfg, tmp_path / "cut", torch.device("cpu"), progress=False, log=quiet)
    assert result["resumed_from"] == [50]
    same_record(result, records.read_jsonl(d / records.METRICS), ref, ref_metrics)


def test_device_seconds_split_among_packed_runs_and_summed_over_resumes(tmp_path, one_thread, monkeypatch):
    """A run packed with 3 others counts a quarter of its wall time as device time; a resume
    unpacked adds its own segment whole. Older checkpoints (no device_seconds) count as unshared."""
    cfg = tiny(steps=40)
    real_save, saved = checkpoint.save, {}

    def save_then_die(path, obj):
        real_save(path, obj)
        saved[obj["step"]] = obj
        if obj["step"] == 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet, runs_per_device=4)
    cut = saved[20]
    assert cut["device_seconds"] == pytest.approx(cut["train_seconds"] / 4, rel=1e-9)
    monkeypatch.setattr(checkpoint, "save", real_save)
    result = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet, runs_per_device=1)
    assert result["resumed_from"] == [20] and result["runs_per_device"] == 1
    assert result["device_seconds"] == pytest.approx(
        cut["device_seconds"] + result["wall_seconds"] - cut["train_seconds"], abs=2e-3)
    assert result["device_seconds"] < result["wall_seconds"] - 0.5 * cut["train_seconds"]

    # A checkpoint written before device_seconds existed: its segment counts whole.
    d = run_dir(tmp_path / "old", cfg)
    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "old", torch.device("cpu"), progress=False, log=quiet, runs_per_device=4)
    monkeypatch.setattr(checkpoint, "save", real_save)
    old = checkpoint.load(d / checkpoint.CHECKPOINT)
    del old["device_seconds"]
    real_save(d / checkpoint.CHECKPOINT, old)
    result = train(cfg, tmp_path / "old", torch.device("cpu"), progress=False, log=quiet, runs_per_device=2)
    assert result["device_seconds"] == pytest.approx(
        old["train_seconds"] + (result["wall_seconds"] - old["train_seconds"]) / 2, abs=2e-3)
    with pytest.raises(ConfigError, match="runs_per_device"):
        train(cfg, tmp_path / "bad", torch.device("cpu"), progress=False, log=quiet, runs_per_device=0)


def test_keep_checkpoint_and_no_resume(reference, tmp_path, one_thread):
    cfg = tiny()
    d = run_dir(tmp_path, cfg)
    first = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet, keep_checkpoint=True)
    assert checkpoint.load(d / checkpoint.CHECKPOINT)["step"] == 120
    again = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet)  # resumes at the end: test only
    assert again["resumed_from"] == [120] and again["test_acc"] == first["test_acc"] == reference[0]["test_acc"]
    fresh = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet, resume=False)
    assert fresh["resumed_from"] == [] and fresh["test_loss"] == reference[0]["test_loss"]
    same_record(fresh, records.read_jsonl(d / records.METRICS), *reference)


def test_divergence_is_recorded(tmp_path):
    cfg = tiny(steps=40, **{"train.lr": 1e6, "train.clip_value": 0, "model.dropout": 0.0})
    result = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet)
    assert result["status"].startswith("diverged: non-finite training loss at step ")
    assert result["test_acc"] is None
    on_disk = json.loads((run_dir(tmp_path, cfg) / records.RESULT).read_text())
    assert on_disk["status"] == result["status"]
    assert not (run_dir(tmp_path, cfg) / checkpoint.CHECKPOINT).exists()


def test_exception_is_recorded_as_failed_and_reraised(tmp_path, monkeypatch):
    import lra.train as lt

    def broken(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(lt, "evaluate", broken)
    cfg = tiny(steps=20)
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet)
    d = run_dir(tmp_path, cfg)
    result = json.loads((d / records.RESULT).read_text())
    assert result["status"] == "failed: RuntimeError: boom"
    assert result["config_hash"] == cfg.hash()
    assert "Traceback" in (d / "error.txt").read_text()
    assert not checkpoint.is_locked(d)  # the lock went with the failure


def test_lock_prevents_a_second_trainer(tmp_path):
    cfg = tiny(steps=20)
    d = run_dir(tmp_path, cfg)
    with RunLock(d):
        assert checkpoint.is_locked(d)
        with pytest.raises(RunLocked, match="another process"):
            train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet)
        with pytest.raises(RunLocked):
            RunLock(d).acquire()
    assert not checkpoint.is_locked(d)
    assert not (d / records.RESULT).exists()


def test_stale_lock_file_does_not_block(tmp_path):
    cfg = tiny(steps=20)
    d = run_dir(tmp_path, cfg)
    d.mkdir(parents=True)
    (d / checkpoint.LOCK).write_text("pid 999999 host gone\n")  # its holder died: the kernel dropped the lock
    assert not checkpoint.is_locked(d)
    result = train(cfg, tmp_path, torch.device("cpu"), progress=False, log=quiet)
    assert result["status"] == "finished"


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = checkpoint.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]
