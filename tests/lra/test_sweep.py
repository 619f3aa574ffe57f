"""`lra sweep`: planning, sharding, skipping finished runs, parallel workers, failure
isolation, locks and Ctrl-C (tiny CPU runs through real worker processes)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from lra import checkpoint, records, sweep
from lra.checkpoint import RunLock
from lra.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SETS = ["train.steps=20", "train.eval_every=10", "data.n_train=200", "data.n_val=50", "data.n_test=50",
        "data.max_length=40", "data.seq_len=40", "model.layers=1", "train.warmup=5"]


def quiet(*_):
    pass


def tiny_sweep(out, attention="softmax,polarity:alpha=3", seeds="0", sets=(), **kw):
    return sweep.sweep(tasks="listops", attention=attention, seeds=seeds, protocol="quick",
                       sets=[*SETS, *sets], out=out, progress=False, log=quiet, threads=1, **kw)


def test_specs_seeds_and_shard_parsing():
    assert sweep.split_specs("softmax,polarity:alpha=3,backend=torch,linear,polarity:alpha=5") == [
        "softmax", "polarity:alpha=3,backend=torch", "linear", "polarity:alpha=5"]
    assert sweep.parse_seeds("0,1,2") == sweep.parse_seeds("0-2") == sweep.parse_seeds([0, 1, 2]) == [0, 1, 2]
    assert sweep.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError, match="--shard"):
            sweep.parse_shard(bad)
    with pytest.raises(ConfigError, match="seeds"):
        sweep.parse_seeds("a,b")


def test_the_issue_grid_and_two_shards_cover_it_once():
    grid = sweep.make_grid("listops,pathfinder", "softmax,linear,polarity:alpha=3,polarity:alpha=5", "0,1,2",
                           "skyformer")
    cfgs = sweep.plan(grid)
    assert len(cfgs) == 2 * 4 * 3 == len({c.hash() for c in cfgs})
    assert {c.variant_label() for c in cfgs} == {"softmax", "linear", "polarity:alpha=3", "polarity:alpha=5"}
    for n in (2, 3):
        shards = [sweep.shard(cfgs, i, n) for i in range(n)]
        hashes = [c.hash() for s in shards for c in s]
        assert sorted(hashes) == sorted(c.hash() for c in cfgs)  # every run once, none twice
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    # Deterministic whatever order the grid was written in: machines agree without talking.
    rev = sweep.plan(sweep.make_grid("pathfinder,listops", "polarity:alpha=5,polarity:alpha=3,linear,softmax",
                                     "2,1,0", "skyformer"))
    assert [c.hash() for c in sweep.shard(rev, 1, 3)] != [] and \
        {c.hash() for c in sweep.shard(rev, 1, 3)} == {c.hash() for c in sweep.shard(cfgs, 1, 3)}


def test_the_skyformer_protocol_sets_its_reference_codes_variant_settings():
    """Skyformer's code/config.py: Nystromformer without the convolution on v, Performer with 128
    features (in its attention_performer.py's form); its models/attention_linformer.py: one fixed random E per head for keys and values;
    its Nystromformer's and Skyformer's landmarks and pseudo-inverse start; softmax's attention dropout.
    The plain name is that setting; spelling a default out is the same run; another
    value is another run, labelled by what differs."""
    def run(spec, protocol="skyformer"):
        return sweep.resolve_run("listops", spec, protocol, 0, {}, None)

    nys = run("nystromformer")
    assert nys.model.attention_hp == {"conv_kernel": 0, "landmarks": "padded", "pinv_scope": "batch"}
    assert nys.variant_label() == "nystromformer"
    sky = run("skyformer")
    assert sky.model.attention_hp == {"sampling": "prefix", "pinv_scope": "batch"} and sky.variant_label() == "skyformer"
    assert run("skyformer:sampling=real").variant_label() == "skyformer:sampling=real"
    assert run("nystromformer:conv_kernel=0").hash() == nys.hash()
    conv = run("nystromformer:conv_kernel=35")
    assert conv.hash() != nys.hash() and conv.variant_label() == "nystromformer:conv_kernel=35"
    perf = run("performer")
    assert perf.model.attention_hp == {"nb_features": 128, "qk_scale": "d", "key_max": "batch",
                                       "stabiliser": 1e-4, "padded_keys": True}
    assert perf.variant_label() == "performer"
    assert run("performer:nb_features=256").variant_label() == "performer:nb_features=256"
    favor = run("performer:qk_scale=sqrt_d,key_max=head,stabiliser=1e-6,padded_keys=false")
    assert favor.hash() != perf.hash()
    assert favor.variant_label() == "performer:key_max=head,padded_keys=false,qk_scale=sqrt_d,stabiliser=1e-6"
    lin = run("linformer")
    assert lin.model.attention_hp == {"share_kv": True, "per_head": True, "trainable": False}
    assert lin.variant_label() == "linformer"
    learned = run("linformer:trainable=true")
    assert learned.hash() != lin.hash() and learned.variant_label() == "linformer:trainable=true"
    assert run("linear").model.attention_hp == {}
    soft = run("softmax")  # code/models/attention.py: dropout 0.1 on the attention weights
    assert soft.model.attention_hp == {"dropout": 0.1} and soft.variant_label() == "softmax"
    assert run("softmax:dropout=0.1").hash() == soft.hash()
    assert run("softmax:dropout=0").variant_label() == "softmax:dropout=0"
    assert soft.data == {"seq_len": 2048}  # create_listops.py pads to 2,048
    # Other protocols keep the zoo's defaults (Nystromformer's own port has the kernel-35 conv).
    assert run("nystromformer", "nystromformer").model.attention_hp == {}
    from lra.model import Block  # the built layer follows the config

    assert Block(nys.model, 256).attn.conv is None and Block(conv.model, 256).attn.conv is not None
    fixed = Block(lin.model, 256).attn
    assert fixed.F is None and fixed.E.shape == (2, 128, 256) and "E" in dict(fixed.named_buffers())
    assert "E" in dict(Block(learned.model, 256).attn.named_parameters())


def test_grid_file_resolves_like_the_command_line(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('tasks = ["listops"]\nattention = ["softmax", "polarity:alpha=3"]\nseeds = "0-1"\n'
                         'protocol = "quick"\n[set]\n"train.steps" = 20\n"train.warmup" = 5\n[set.model]\nlayers = 1\n')
    from_file = sweep.plan(sweep.make_grid(grid_file=grid_file))
    from_cli = sweep.plan(sweep.make_grid("listops", "softmax,polarity:alpha=3", "0,1", "quick",
                                          ["train.steps=20", "train.warmup=5", "model.layers=1"]))
    assert [c.hash() for c in from_file] == [c.hash() for c in from_cli] and len(from_file) == 4
    # `lra run` of one grid point lands in the same run folder (same resolved config).
    one = sweep.resolve_run("listops", "polarity:alpha=3", "quick", 1, {"train.steps": "20", "train.warmup": "5",
                                                                          "model.layers": "1"},
                            None)
    assert one.hash() in {c.hash() for c in from_file}
    # The command line overrides the file.
    assert len(sweep.plan(sweep.make_grid(seeds="5", grid_file=grid_file))) == 2
    grid_file.write_text('tasks = ["listops"]\nnope = 1\n')
    with pytest.raises(ConfigError, match="unknown key"):
        sweep.make_grid(grid_file=grid_file)


def test_bad_grid_fails_before_anything_runs(tmp_path):
    from attention_zoo.registry import UnknownVariantError

    with pytest.raises(UnknownVariantError):
        tiny_sweep(tmp_path, attention="softmax,nosuch")
    with pytest.raises(ConfigError, match="train.lr"):
        tiny_sweep(tmp_path, sets=["train.lr=-1"])
    assert not any(tmp_path.iterdir())


def test_two_jobs_on_cpu_complete_a_grid_then_a_rerun_runs_nothing(tmp_path):
    out = tmp_path / "runs"
    first = tiny_sweep(out, seeds="0,1", jobs_per_gpu=2)
    assert first["runs"] == 4 and first["outcome"] == {"finished": 4} and first["final"] == {"done": 4}
    saved = json.loads(Path(first["path"]).read_text())
    for key in ("runs", "wall_seconds", "runs_per_hour", "jobs_per_gpu", "device"):
        assert key in saved
    assert saved["jobs_per_gpu"] == 2 and saved["runs_per_hour"] > 0 and saved["device"].startswith("cpu")
    finished = [r for r in records.load_runs(out) if r["status"] == "finished"]
    assert len(finished) == 4
    for r in finished:  # two at a time on the CPU: each counts half its wall time as device time
        assert r["runs_per_device"] == 2 and r["device_seconds"] == pytest.approx(r["wall_seconds"] / 2, abs=2e-3)
    assert not list(out.rglob(checkpoint.CHECKPOINT))  # deleted once each run finished
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob(records.RESULT)}

    again = tiny_sweep(out, seeds="0,1", jobs_per_gpu=2)
    assert again["runs"] == 0 and again["runs_to_run"] == 0 and "path" not in again
    assert {p: p.stat().st_mtime_ns for p in out.rglob(records.RESULT)} == mtimes
    # Shards of the same grid find their runs done too.
    assert tiny_sweep(out, seeds="0,1", shard_spec="1/2", dry_run=True)["to_run"] == 0
    # A stale plan (another machine finished the run since): the worker sees it under the lock.
    cfg = sweep.plan(sweep.make_grid("listops", "softmax", "0", "quick", SETS))[0]
    stale = sweep.PlannedRun(cfg, sweep.run_dir(out, cfg), sweep.TODO)
    assert sweep.execute([stale], out, progress=False, log=quiet, threads=1) == {"skipped": 1}
    assert {p: p.stat().st_mtime_ns for p in out.rglob(records.RESULT)} == mtimes


def test_diverging_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    summary = tiny_sweep(tmp_path, sets=["train.lr=1e6", "train.clip_value=0"])
    assert summary["outcome"] == {"diverged": 2} and summary["final"] == {"diverged": 2}
    statuses = [r["status"] for r in records.load_runs(tmp_path)]
    assert len(statuses) == 2 and all(s.startswith("diverged: non-finite") for s in statuses)
    # Deterministic: not rerun unless asked.
    assert tiny_sweep(tmp_path, sets=["train.lr=1e6", "train.clip_value=0"], dry_run=True)["to_run"] == 0
    assert tiny_sweep(tmp_path, sets=["train.lr=1e6", "train.clip_value=0"], dry_run=True,
                      retry_diverged=True)["to_run"] == 2


def test_a_crashed_worker_is_recorded_and_the_sweep_goes_on(tmp_path):
    """SIGKILL one worker (as the OOM killer would): the sweep records it and runs the next."""
    grid = sweep.plan(sweep.make_grid("listops", "softmax,polarity:alpha=3", "0", "quick",
                                      [*SETS, "train.steps=300"]))
    first = sweep.run_dir(tmp_path, grid[0])
    box = {}
    t = threading.Thread(target=lambda: box.update(tiny_sweep(tmp_path, sets=["train.steps=300"])))
    t.start()
    deadline = time.time() + 120
    while not (first / checkpoint.CHECKPOINT).exists():
        assert time.time() < deadline and t.is_alive()
        time.sleep(0.02)
    pid = int((first / checkpoint.LOCK).read_text().split()[1])
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=300)
    assert box["outcome"] == {"failed": 1, "finished": 1}, box
    result = json.loads((first / records.RESULT).read_text())
    assert result["status"].startswith("failed: worker exited with status -9")
    # A failed run keeps its checkpoint and is retried (resumed) by the next sweep.
    assert sweep.run_status(tmp_path, grid[0]).status == sweep.PARTIAL


def test_a_locked_run_is_left_to_its_holder(tmp_path):
    cfg = sweep.plan(sweep.make_grid("listops", "softmax", "0", "quick", SETS))[0]
    with RunLock(sweep.run_dir(tmp_path, cfg)):
        assert sweep.run_status(tmp_path, cfg).status == sweep.RUNNING
        summary = tiny_sweep(tmp_path, attention="softmax")
    assert summary["runs"] == 0 and not (sweep.run_dir(tmp_path, cfg) / records.RESULT).exists()


def test_ctrl_c_keeps_the_checkpoint_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "runs"
    code = ("from lra.sweep import sweep; sweep(tasks='listops', attention='softmax', seeds='0', protocol='quick', "
            f"sets={[*SETS, 'train.steps=300']!r}, out={str(out)!r}, progress=False, threads=1)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    cfg = sweep.plan(sweep.make_grid("listops", "softmax", "0", "quick", [*SETS, "train.steps=300"]))[0]
    d = sweep.run_dir(out, cfg)
    deadline = time.time() + 120
    while not (d / checkpoint.CHECKPOINT).exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and "interrupted" in output, output
    assert not checkpoint.is_locked(d)  # the worker is gone, not orphaned
    assert (d / checkpoint.CHECKPOINT).exists() and not (d / records.RESULT).exists()
    (summary_file,) = (out / sweep.SWEEPS_DIR).iterdir()
    assert json.loads(summary_file.read_text())["interrupted"] is True
    assert sweep.run_status(out, cfg).status == sweep.PARTIAL

    again = tiny_sweep(out, attention="softmax", sets=["train.steps=300"])
    assert again["outcome"] == {"finished": 1}
    result = json.loads((d / records.RESULT).read_text())
    assert result["resumed_from"] and result["resumed_from"][0] >= 10
    steps = [m["step"] for m in records.read_jsonl(d / records.METRICS)]
    assert steps == list(range(10, 301, 10))  # no duplicated rows


def test_finish_sweep_uses_whatever_the_results_layer_has(tmp_path, monkeypatch):
    import results

    calls = []
    table = types.SimpleNamespace(render_table=lambda runs: calls.append(("table", runs)) or "| t |")
    plots = types.SimpleNamespace(plot_all=lambda root, out_dir: calls.append(("plots", root, out_dir)) or ["a.png"])
    monkeypatch.setitem(sys.modules, "results.table", table)
    monkeypatch.setitem(sys.modules, "results.plots", plots)
    monkeypatch.setattr(results, "table", table, raising=False)
    monkeypatch.setattr(results, "plots", plots, raising=False)
    out = sweep.finish_sweep(tmp_path, [{"x": 1}], log=quiet)
    assert calls == [("table", [{"x": 1}]), ("plots", tmp_path, tmp_path / "figures")]
    assert out == {"table": "| t |", "figures": ["a.png"]} and (tmp_path / "table.md").read_text() == "| t |\n"

    empty = types.SimpleNamespace()  # neither function landed yet
    monkeypatch.setitem(sys.modules, "results.table", empty)
    monkeypatch.setattr(results, "table", empty)
    monkeypatch.setitem(sys.modules, "results.plots", empty)
    monkeypatch.setattr(results, "plots", empty)
    assert sweep.finish_sweep(tmp_path, [], log=quiet) == {}

    def broken(runs):
        raise ValueError("bad frame")

    monkeypatch.setattr(empty, "render_table", broken, raising=False)
    lines = []
    assert sweep.finish_sweep(tmp_path, [], log=lines.append) == {}
    assert "render_table failed" in lines[0]
