"""The CLI end to end: errors are one line, a tiny run records and tabulates."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import lra

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--protocol", "quick", "--no-progress", "--set", "train.steps=30", "--set", "train.eval_every=15",
        "--set", "data.n_train=200", "--set", "data.n_val=50", "--set", "data.n_test=50",
        "--set", "data.max_length=40", "--set", "data.seq_len=40", "--set", "model.layers=1", "--set", "train.warmup=5"]


def lra_subprocess(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-c", "from cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "nosuchtask"], "unknown task 'nosuchtask'; valid: "),
        (["run", "listops", "--attention", "nosuch"], "unknown attention 'nosuch'; valid: "),
        (["run", "listops", "--attention", "polarity:beta=2"], "unknown hyperparameter(s) beta; valid: "),
        (["run", "listops", "--attention", "polarity:alpha=x"], "alpha must be float"),
        (["run", "listops", "--protocol", "nope"], "unknown protocol 'nope'"),
        (["run", "listops", "--set", "train.lr=-1"], "train.lr must be > 0"),
        (["run", "listops", "--set", "model.heads=3"], "not divisible"),
        (["run", "listops", "--set", "train.nope=1"], "unknown config key 'train.nope'"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    r = lra_subprocess(*args, "--out", str(tmp_path))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in r.stderr


def test_help_for_every_command():
    runner = CliRunner()
    for cmd in lra.commands:
        r = runner.invoke(lra, [cmd, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output


def test_tiny_run_then_table(tmp_path):
    runner = CliRunner()
    out = tmp_path / "runs"
    for attention in ("softmax", "polarity:alpha=5"):
        r = runner.invoke(lra, ["run", "listops", "--attention", attention, "--out", str(out), *TINY])
        assert r.exit_code == 0, r.output
        assert "test acc" in r.output and "majority class" in r.output
    results = sorted(out.rglob("result.json"))
    assert len(results) == 2
    res = json.loads(results[0].read_text())
    for key in ("best_val_acc", "test_acc", "test_majority_rate", "steps", "wall_seconds", "peak_memory_bytes",
                "parameters", "env"):
        assert key in res
    config = json.loads((results[0].parent / "config.json").read_text())
    assert config["train"]["steps"] == 30 and config["data_resolved"]["n_train"] == 200
    metrics = [json.loads(l) for l in (results[0].parent / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [15, 30]
    assert {"train_loss", "val_loss", "val_acc", "lr", "examples_per_s"} <= set(metrics[0])

    r = runner.invoke(lra, ["table", "--runs", str(out)])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("| variant | listops |") and "avg" in lines[0]
    body = {l.split("|")[1].strip(): l for l in lines[2:] if l.startswith("|")}
    assert set(body) == {"softmax", "polarity:alpha=5"}

    # --runs repeats: one table over two folders; a run in both counts once
    other = tmp_path / "other"
    polarity_run = next(p.parent for p in results if "polarity" in str(p))
    shutil.move(str(polarity_run), str(other / polarity_run.relative_to(out)))
    softmax_run = next(p.parent for p in out.rglob("result.json"))
    shutil.copytree(softmax_run, other / softmax_run.relative_to(out))
    r = runner.invoke(lra, ["table", "--runs", str(out), "--runs", str(other)])
    assert r.exit_code == 0, r.output
    body = {l.split("|")[1].strip(): l for l in r.output.splitlines()[2:] if l.startswith("|")}
    assert set(body) == {"softmax", "polarity:alpha=5"} and "(1)" in body["softmax"]
    r = runner.invoke(lra, ["table", "--runs", str(out)])
    assert "polarity" not in r.output


def test_table_without_runs_fails(tmp_path):
    r = CliRunner().invoke(lra, ["table", "--runs", str(tmp_path)])
    assert r.exit_code != 0 and "no finished runs" in r.output
    # a mistyped second folder is an error, not a table that silently lacks its runs
    r = CliRunner().invoke(lra, ["table", "--runs", str(tmp_path), "--runs", str(tmp_path / "missing")])
    assert r.exit_code != 0 and "does not exist" in r.output


def test_reproduction_command_runs_retrieval_on_a_small_aan_file(tmp_path, monkeypatch):
    # Issue 8: no AAN data here. The reproduction command (skyformer protocol, polarity
    # alpha=3, --source retrieval=PATH) runs on a small AAN-format folder; only the
    # length and the number of steps are cut for a CPU test.
    from tests.lra.test_quick_tasks import _aan

    monkeypatch.setenv("LRA_DATA", str(tmp_path / "data"))
    aan = _aan(tmp_path / "aan", n=48)
    out = tmp_path / "runs"
    r = CliRunner().invoke(lra, [
        "sweep", "--tasks", "retrieval", "--attention", "polarity:alpha=3", "--seeds", "0",
        "--protocol", "skyformer", "--source", f"retrieval={aan}", "--out", str(out), "--no-progress",
        "--set", "data.seq_len=64", "--set", "data.pad_to=0", "--set", "train.steps=8", "--set", "train.eval_every=4",
        "--set", "train.batch_size=8", "--set", "train.eval_batches=2", "--set", "train.warmup=1",
    ])
    assert r.exit_code == 0, r.output
    (result,) = out.glob("retrieval/*/*/result.json")
    rec = json.loads(result.read_text())
    assert rec["status"] == "finished" and rec["variant"] == "polarity:alpha=3" and rec["protocol"] == "skyformer"
    assert 0.0 <= rec["test_acc"] <= 1.0


def test_overall_best_rule_tests_the_final_model_when_no_later_evaluation_wins(tmp_path):
    """``train.best_rule=overall`` (the Skyformer code): with a learning rate too small to move
    the model, the evaluation past the threshold only ties the first, so nothing is kept and
    the final model is tested; the record says so."""
    r = CliRunner().invoke(lra, ["run", "listops", "--attention", "softmax", "--out", str(tmp_path), *TINY,
                                 "--set", "train.best_rule=overall", "--set", "train.best_after=0.5",
                                 "--set", "train.lr=1e-12", "--set", "model.dropout=0"])
    assert r.exit_code == 0, r.output
    assert "no best checkpoint kept: the final model was tested" in r.output
    res = json.loads(next(tmp_path.rglob("result.json")).read_text())
    assert res["best_step"] is None and res["best_val_acc"] is None and res["test_acc"] is not None
