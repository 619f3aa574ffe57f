import json
import os

import pytest

from lra import records


def test_round_trip(tmp_path):
    run = tmp_path / "listops" / "softmax" / "quick-seed0-abc"
    records.write_json_atomic(run / records.CONFIG, {"task": "listops"})
    records.append_jsonl(run / records.METRICS, {"step": 1, "val_acc": 0.5})
    records.append_jsonl(run / records.METRICS, {"step": 2, "val_acc": 0.6})
    result = {"task": "listops", "test_acc": 0.4, "status": "finished", "env": records.environment()}
    records.write_json_atomic(run / records.RESULT, result)
    (loaded,) = records.load_runs(tmp_path)
    assert loaded["test_acc"] == 0.4 and loaded["config"] == {"task": "listops"} and loaded["dir"] == str(run)
    assert [r["step"] for r in records.read_jsonl(run / records.METRICS)] == [1, 2]
    assert "torch" in loaded["env"] and "device" in loaded["env"]


def test_torn_metrics_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "val')
    assert records.read_jsonl(path) == [{"step": 1}]


def test_interrupted_write_leaves_no_partial_result(tmp_path, monkeypatch):
    path = tmp_path / records.RESULT
    records.write_json_atomic(path, {"v": 1})

    def boom(*a, **k):
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of serialising

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(KeyboardInterrupt):
        records.write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == [records.RESULT]


def test_unfinished_run_is_not_loaded(tmp_path):
    records.write_json_atomic(tmp_path / "a" / records.CONFIG, {"task": "x"})
    assert records.load_runs(tmp_path) == []


def _losses(values, start=100, every=100):
    return [{"step": start + i * every, "train_loss": v} for i, v in enumerate(values)]


def test_train_loss_rise_is_zero_for_a_run_that_keeps_improving():
    assert records.train_loss_rise(_losses([2.3 - 0.01 * i for i in range(100)])) == pytest.approx(0.0)


def test_train_loss_rise_measures_a_late_collapse():
    # flat at 1.7, then up to 2.2 for the last 30 of 100 logs: windows of 5 logs
    losses = [1.7] * 70 + [2.2] * 30
    assert records.train_loss_rise(_losses(losses)) == pytest.approx(0.5)
    # a single noisy log is averaged away (window max(5, n // 20) = 10 for 200 logs)
    noisy = [1.7] * 199 + [2.7]
    assert records.train_loss_rise(_losses(noisy)) == pytest.approx(0.1)
    assert records.train_loss_rise(_losses(noisy)) <= records.LOSS_RISE_UNSTABLE + 1e-9


def test_train_loss_rise_counts_a_resumed_step_once_and_needs_a_window():
    rows = _losses([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    repeated = rows[:4] + [{"step": rows[3]["step"], "train_loss": 1.0}] + rows[4:]  # step logged again on resume
    assert records.train_loss_rise(repeated) == pytest.approx(0.0)
    assert records.train_loss_rise(_losses([1.0, 2.0, 3.0, 4.0])) is None  # fewer logs than one window
    assert records.train_loss_rise([{"step": 1, "val_acc": 0.5}]) is None  # no training loss logged


def test_load_runs_attaches_the_loss_rise(tmp_path):
    run = tmp_path / "listops" / "performer" / "run"
    records.write_json_atomic(run / records.CONFIG, {"task": "listops"})
    for row in _losses([1.7] * 8 + [2.0] * 2):
        records.append_jsonl(run / records.METRICS, row)
    records.write_json_atomic(run / records.RESULT, {"task": "listops", "status": "finished"})
    (loaded,) = records.load_runs(tmp_path)
    assert loaded["train_loss_rise"] == pytest.approx(0.3 * 2 / 5)
