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
