"""scripts/device_detached.sh: a detached chain outlives changes to the working tree.

The device tool re-copies the working tree at every call. Session 24 lost a chain that was
importing `lra` while that happened, so `start` runs each chain from its own snapshot of the
code. Here the tree's `lra/` is broken right after `start`; the chain must still finish.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "data.n_train=32", "--set", "data.n_val=16", "--set", "data.n_test=16",
        "--set", "data.seq_len=128", "--set", "data.max_length=120", "--set", "data.min_length=30",
        "--set", "train.steps=2", "--set", "train.warmup=1", "--set", "train.eval_every=1",
        "--set", "train.batch_size=4"]


def _tree(tmp_path):
    """A copy of the code (what the device tool copies) and the script's environment."""
    repo = tmp_path / "repo"
    for name in ("lra", "attention_zoo", "tasks", "scripts"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "cli.py", repo / "cli.py")
    env = dict(os.environ, LRA_REPRO=str(tmp_path / "repro"), LRA_DATA=str(tmp_path / "data"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    return repo, env


def test_a_started_chain_runs_from_its_own_snapshot_of_the_code(tmp_path):
    repo, env = _tree(tmp_path)
    script = ["bash", "scripts/device_detached.sh"]
    out = tmp_path / "out"

    started = subprocess.run([*script, "start", str(out), "0", "listops", "softmax", *TINY],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    assert "started chain g0 on GPU 0" in started.stdout
    # what a later call's copy of the tree does at its worst: a half-written package (an
    # editable install would find `lra` elsewhere if it were gone, so it is broken instead)
    for f in (repo / "lra").glob("*.py"):
        f.write_text("raise ImportError('the tree is being re-copied')\n")

    waited = subprocess.run([*script, "wait", str(out), "240"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=300)
    assert waited.returncode == 0, waited.stderr
    log = (tmp_path / "repro" / "logs" / "g0.log").read_text()
    assert "1 finished" in log, log
    with tarfile.open(out / "records.tgz") as tar:
        names = tar.getnames()
        result = next(n for n in names if n.endswith("result.json"))
        record = json.load(tar.extractfile(result))
    assert result.startswith("runs/listops/softmax/skyformer-seed0-")
    assert record["status"] == "finished" and record["steps"] == 2
    assert not any(n.endswith("checkpoint.pt") for n in names)


def test_a_bad_job_starts_nothing_and_says_why_in_one_line(tmp_path):
    """A variant spelled as its record folder (polarity-alpha3) in the second job: start refuses
    the whole chain before preparing any data, naming the job and the sweep's reason."""
    repo, env = _tree(tmp_path)
    started = subprocess.run(["bash", "scripts/device_detached.sh", "start", str(tmp_path / "out"), "0",
                              "listops", "softmax", *TINY, "then", "listops", "polarity-alpha3", *TINY],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 2
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('listops "polarity-alpha3": error: unknown attention')
    assert lines[0].endswith("(no chain started)")
    assert "started chain" not in started.stdout
    logs = tmp_path / "repro" / "logs"
    assert not list(logs.glob("g0*"))  # no chain file, log or pid
    assert not (tmp_path / "repro" / "code").exists()  # nor a snapshot of the code
    assert not (tmp_path / "data").exists()  # the first job's data was not prepared either


ADVANCE = '''
import json, os, sys, torch
run = sys.argv[1]
step = torch.load(os.path.join(run, "checkpoint.pt"))["step"] + 500
with open(os.path.join(run, "metrics.jsonl"), "a") as f:  # the trainer: its row, then its checkpoint
    f.write(json.dumps({"step": step, "val_acc": 0.5}) + "\\n")
torch.save({"step": step}, os.path.join(run, "checkpoint.pt.tmp"))
os.replace(os.path.join(run, "checkpoint.pt.tmp"), os.path.join(run, "checkpoint.pt"))
'''


def test_wait_packs_a_training_run_with_its_curve_reaching_its_checkpoint(tmp_path):
    """A run still training moves on while `wait` packs it. Here a `cp` shim lets the run write its
    next metrics row and checkpoint right after the first file is copied: whichever order the
    packing reads them in, the archive's curve must reach the archived checkpoint's step (the
    resume truncates rows past it, but it cannot fill a gap)."""
    torch = pytest.importorskip("torch")
    repo, env = _tree(tmp_path)
    run = tmp_path / "repro" / "runs" / "listops" / "softmax" / "skyformer-seed0-0123456789ab"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "val_acc": 0.4}) + "\n" for s in (500, 1000)))
    torch.save({"step": 1000}, run / "checkpoint.pt")
    (tmp_path / "advance.py").write_text(ADVANCE)
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "cp").write_text(f"""#!/usr/bin/env bash
/bin/cp "$@" || exit $?
[ -e "{tmp_path}/advanced" ] && exit 0
touch "{tmp_path}/advanced"
"{sys.executable}" "{tmp_path}/advance.py" "{run}"
""")
    (shims / "cp").chmod(0o755)
    env["PATH"] = f"{shims}{os.pathsep}{env['PATH']}"

    out = tmp_path / "out"
    waited = subprocess.run(["bash", "scripts/device_detached.sh", "wait", str(out), "1"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=120)
    assert waited.returncode == 0, waited.stderr
    assert (tmp_path / "advanced").exists()  # the run did move on mid-packing
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1500
    unpacked = tmp_path / "unpacked"
    with tarfile.open(out / "run_listops_softmax_0123456789ab.tgz") as tar:
        tar.extractall(unpacked, filter="data")
    got = unpacked / "runs" / "listops" / "softmax" / "skyformer-seed0-0123456789ab"
    assert sorted(p.name for p in got.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    ckpt_step = torch.load(got / "checkpoint.pt")["step"]
    curve = [json.loads(line)["step"] for line in (got / "metrics.jsonl").read_text().splitlines()]
    assert ckpt_step in curve and curve[-1] >= ckpt_step, (ckpt_step, curve)
    assert not (tmp_path / "repro" / "pack").exists()  # the packing's copy is gone
