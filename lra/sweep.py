"""``lra sweep``: plan a grid of runs, show it, run what is not done, tabulate the results.

A grid is tasks x attention specs x seeds under one protocol (plus ``--set`` overrides
and per-task sources), from the command line or a TOML file. Every point resolves to a
``RunConfig`` exactly as ``lra run`` resolves it, so both commands share run folders:
``records.run_dir_name(..., cfg.hash())``.

- Skipping: a run whose folder holds a result.json with status ``finished`` (or
  ``diverged``: that is deterministic, so rerunning it is only asked for with
  ``retry_diverged``) is done. A run with a checkpoint resumes from it.
- Isolation: each run is a ``python -m lra.worker`` process; a divergence or exception
  is recorded in that run's result.json and the sweep goes on. Ctrl-C stops the workers
  at their last checkpoint; the same command resumes.
- Parallelism: ``jobs_per_gpu`` workers per visible GPU (``CUDA_VISIBLE_DEVICES`` set
  per worker), or that many CPU processes with ``cores // jobs`` threads each.
- Many machines: ``shard=(i, n)`` takes the runs whose position in the grid sorted by
  config hash is ``i`` mod ``n``; run folders are unique per config, so shards' records
  merge by copying folders together, and a per-run lock (lra/checkpoint.py) keeps two
  processes on a shared folder from training the same run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lra import checkpoint, records
from lra.config import ConfigError, RunConfig, check, kv_pairs, split_specs
from lra.distributed import safe_env

DONE, DIVERGED, FAILED, PARTIAL, TODO, RUNNING = "done", "diverged", "failed", "partial", "to run", "running"
SWEEPS_DIR = "_sweeps"


def parse_seeds(value: str | int | Iterable[Any]) -> list[int]:
    """'0,1,2', '0-4', 3 or [0, 1] -> a list of ints."""
    if isinstance(value, int):
        return [value]
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    seeds: list[int] = []
    try:
        for item in filter(None, (i.strip() for i in items)):
            lo, dash, hi = item.partition("-")
            seeds.extend(range(int(lo), int(hi) + 1) if dash and lo else [int(item)])
    except ValueError:
        raise ConfigError(f"seeds must be integers like '0,1,2' or '0-4', got {value!r}") from None
    return list(dict.fromkeys(seeds))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    i, slash, n = text.partition("/")
    try:
        shard = int(i), int(n)
    except ValueError:
        shard = (-1, 0)
    if not slash or not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"--shard expects i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return shard


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _as_text(v: Any) -> str:
    # Values from a grid file become the strings ``--set`` would give, so a grid point and
    # the same ``lra run`` resolve to the same config (and hash).
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@dataclass
class Grid:
    tasks: list[str]
    attention: list[str]
    seeds: list[int]
    protocol: str = "skyformer"
    sets: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


GRID_KEYS = {"tasks", "attention", "seeds", "protocol", "set", "source"}


def load_grid_file(path: Path) -> dict[str, Any]:
    """A grid file (TOML; YAML when PyYAML is installed)::

        tasks = ["listops", "pathfinder"]
        attention = ["softmax", "linear", "polarity:alpha=3"]
        seeds = [0, 1, 2]            # or "0-2"
        protocol = "skyformer"
        [set]
        "train.steps" = 5000         # or a [set.train] table: steps = 5000
        [source]
        listops = "/data/lra_release/listops-1000"
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"grid file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
        else:
            import tomllib

            raw = tomllib.loads(text)
    except ImportError:
        raise ConfigError(f"{path}: YAML grids need PyYAML (pip install pyyaml); TOML needs none") from None
    except Exception as e:  # a syntax error in the user's file
        raise ConfigError(f"{path}: {e}") from None
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(GRID_KEYS))}")
    return raw


def make_grid(tasks: str | None = None, attention: str | None = None, seeds: str | None = None,
              protocol: str | None = None, sets: Iterable[str] = (), sources: Iterable[str] = (),
              grid_file: str | Path | None = None) -> Grid:
    """Command-line values override the grid file's; ``--set`` / ``--source`` add to them."""
    raw = load_grid_file(Path(grid_file)) if grid_file else {}

    def listed(cli: str | None, key: str, split: Callable[[str], list[str]]) -> list[str]:
        if cli:
            return split(cli)
        value = raw.get(key)
        if value is None:
            return []
        return split(value) if isinstance(value, str) else [str(v) for v in value]

    grid = Grid(
        tasks=listed(tasks, "tasks", lambda s: [t.strip() for t in s.split(",") if t.strip()]),
        attention=listed(attention, "attention", split_specs),
        seeds=parse_seeds(seeds if seeds is not None else raw.get("seeds", [0])),
        protocol=protocol or raw.get("protocol", "skyformer"),
        sets={**{k: _as_text(v) for k, v in _flatten(raw.get("set", {})).items()}, **kv_pairs(sets, "--set")},
        sources={**{k: str(v) for k, v in raw.get("source", {}).items()}, **kv_pairs(sources, "--source")},
    )
    if not grid.tasks:
        raise ConfigError("no tasks: give --tasks listops,pathfinder or 'tasks = [...]' in the grid file")
    if not grid.attention:
        grid.attention = ["softmax"]
    unknown = set(grid.sources) - set(grid.tasks)
    if unknown:
        raise ConfigError(f"--source for task(s) not in the grid: {', '.join(sorted(unknown))}")
    return grid


def resolve_run(task: str, spec: str, protocol: str, seed: int, sets: dict[str, str],
                source: str | None) -> RunConfig:
    """One grid point -> its resolved, validated config (what ``lra run`` computes)."""
    import attention_zoo
    from lra import protocols
    from tasks import get_task

    get_task(task)
    name, hp = attention_zoo.parse_spec(spec)
    attention_zoo.make_hparams(name, **hp)
    cfg = protocols.resolve(task, protocol, name, hp, seed, dict(sets), source)
    attention_zoo.make_hparams(cfg.model.attention, **cfg.model.attention_hp)
    check(cfg)
    return cfg


def plan(grid: Grid) -> list[RunConfig]:
    """Every grid point, validated, in grid order (tasks, then variants, then seeds);
    points that resolve to the same config appear once."""
    cfgs: dict[str, RunConfig] = {}
    for task in grid.tasks:
        for spec in grid.attention:
            for seed in grid.seeds:
                cfg = resolve_run(task, spec, grid.protocol, seed, grid.sets, grid.sources.get(task))
                cfgs.setdefault(cfg.hash(), cfg)
    return list(cfgs.values())


def shard(cfgs: list[RunConfig], index: int, count: int) -> list[RunConfig]:
    """Runs of shard ``index`` of ``count``: position in hash order mod ``count``, so every
    machine computes the same split without talking and the shards cover the grid once."""
    order = sorted(cfgs, key=RunConfig.hash)
    mine = {c.hash() for c in order[index::count]}
    return [c for c in cfgs if c.hash() in mine]


def run_dir(out: Path, cfg: RunConfig) -> Path:
    return Path(out) / records.run_dir_name(cfg.task, cfg.variant_label(), cfg.protocol, cfg.seed, cfg.hash())


def _read_result(d: Path) -> dict[str, Any] | None:
    try:
        return json.loads((d / records.RESULT).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _last_step(metrics: Path) -> int:
    """Step of the last metrics row (reads only the file's tail)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


@dataclass
class PlannedRun:
    cfg: RunConfig
    dir: Path
    status: str
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.cfg.task} {self.cfg.variant_label()} seed {self.cfg.seed}"


def run_status(out: Path, cfg: RunConfig) -> PlannedRun:
    d = run_dir(out, cfg)
    result = _read_result(d)
    if result is not None and result.get("config_hash") == cfg.hash():
        status = str(result.get("status", ""))
        if status == "finished":
            acc = result.get("test_acc")
            return PlannedRun(cfg, d, DONE, f"test {100 * acc:.2f}%" if acc is not None else "")
        if status.startswith("diverged"):
            return PlannedRun(cfg, d, DIVERGED, status.partition(": ")[2])
    if checkpoint.is_locked(d):
        return PlannedRun(cfg, d, RUNNING, "locked by another process")
    if (d / checkpoint.CHECKPOINT).exists():
        return PlannedRun(cfg, d, PARTIAL, f"checkpoint, step ~{_last_step(d / records.METRICS)}/{cfg.train.steps}")
    if result is not None and str(result.get("status", "")).startswith("failed"):
        return PlannedRun(cfg, d, FAILED, str(result["status"]).partition(": ")[2][:60])
    return PlannedRun(cfg, d, TODO)


def plan_table(planned: list[PlannedRun]) -> str:
    head = ["#", "task", "variant", "protocol", "seed", "hash", "steps", "status", ""]
    rows = [[str(i + 1), p.cfg.task, p.cfg.variant_label(), p.cfg.protocol, str(p.cfg.seed), p.cfg.hash(),
             str(p.cfg.train.steps), p.status, p.detail] for i, p in enumerate(planned)]
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    counts = Counter(p.status for p in planned)
    summary = ", ".join(f"{counts[s]} {s}" for s in (DONE, PARTIAL, TODO, FAILED, DIVERGED, RUNNING) if counts[s])
    return "\n".join([fmt(head), *map(fmt, rows), f"{len(planned)} runs: {summary}"])


def finish_sweep(runs_root: Path, runs: list[dict[str, Any]], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Hook into the results layer, whichever parts of it exist: ``results.table.render_table(runs)``
    (printed, and saved as ``<runs_root>/table.md`` when it returns text) and
    ``results.plots.plot_all(runs_root, <runs_root>/figures)``. A failure there is reported,
    never fatal: the runs are already recorded."""
    out: dict[str, Any] = {}
    runs_root = Path(runs_root)
    try:
        from results import table
    except ImportError:
        table = None
    if table is not None and hasattr(table, "render_table"):
        try:
            text = table.render_table(runs)
            out["table"] = text
            if isinstance(text, str) and text:
                log(text)
                records.write_text_atomic(runs_root / "table.md", text + "\n")
        except Exception as e:  # the results layer is another module's; its bug must not lose the sweep
            log(f"warning: results.table.render_table failed: {type(e).__name__}: {e}")
    try:
        from results import plots
    except ImportError:
        plots = None
    if plots is not None and hasattr(plots, "plot_all"):
        try:
            out["figures"] = plots.plot_all(runs_root, runs_root / "figures")
            log(f"figures in {runs_root / 'figures'}: "
                + ", ".join(sorted(Path(f).name for f in out["figures"] if str(f).endswith(".png"))))
        except Exception as e:
            log(f"warning: results.plots.plot_all failed: {type(e).__name__}: {e}")
    return out


def gpu_ids(device: str) -> list[str]:
    """The GPUs the workers share, as CUDA_VISIBLE_DEVICES entries; [] runs on CPU."""
    if device == "cpu":
        return []
    import torch

    if not torch.cuda.is_available():
        if device.startswith("cuda"):
            raise ConfigError("--device cuda but no CUDA GPU is visible")
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else \
        [str(i) for i in range(torch.cuda.device_count())]
    if device.startswith("cuda:"):
        return [ids[int(device.split(":")[1])]]
    return ids[: torch.cuda.device_count()]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class _Job:
    run: PlannedRun
    slot: tuple[str | None, int]
    proc: subprocess.Popen
    log_file: Any
    started: float


def _fail_record(p: PlannedRun, message: str) -> None:
    """A worker that died without a record (killed for memory, segfault) still gets one."""
    from lra.train import run_identity

    records.write_json_atomic(p.dir / records.RESULT, {**run_identity(p.cfg), "status": f"failed: {message}",
                                                       "env": records.environment()})


def execute(todo: list[PlannedRun], out: Path, jobs_per_gpu: int = 1, device: str = "auto", resume: bool = True,
            keep_checkpoints: bool = False, progress: bool = True, log: Callable[[str], None] = print,
            poll_s: float = 0.5, outcome: Counter[str] | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run ``todo`` as worker processes, ``jobs_per_gpu`` at a time per GPU (or on CPU).
    Returns counts by outcome (also kept in ``outcome`` as they come, for an interrupted
    sweep's summary); KeyboardInterrupt stops the workers at their checkpoints. Each worker
    gets ``threads`` torch threads (default: the cores shared out among the workers)."""
    gpus = gpu_ids(device)
    slots: list[tuple[str | None, int]] = [(g, k) for k in range(jobs_per_gpu) for g in gpus] if gpus else \
        [(None, k) for k in range(jobs_per_gpu)]
    threads = threads or max(1, _cores() // len(slots))
    # runs at once on one device, recorded with each run so its device time is counted as a share
    per_device = max(1, min(jobs_per_gpu, -(-len(todo) // max(1, len(gpus)))))
    queue = list(todo)
    running: list[_Job] = []
    outcome = Counter() if outcome is None else outcome
    done_steps = {id(p): 0 for p in todo}
    total = sum(p.cfg.train.steps for p in todo)
    bar = None
    if progress:
        from lra.train import tqdm_factory

        bar = tqdm_factory()(total=total, desc="sweep", unit="step")
        say = bar.write
    else:
        say = log

    def launch(p: PlannedRun, slot: tuple[str | None, int]) -> _Job:
        p.dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        if slot[0] is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot[0]
        cmd = [sys.executable, "-m", "lra.worker", "--out", str(out), "--device", "cuda" if slot[0] is not None
               else "cpu", "--threads", str(threads), "--resume" if resume else "--no-resume", "--watch-parent", "--skip-finished",
               "--runs-per-device", str(per_device), *(["--keep-checkpoint"] if keep_checkpoints else []),
               json.dumps(p.cfg.to_dict())]
        log_file = open(p.dir / "worker.log", "a")
        log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()} pid {os.getpid()} "
                       f"slot {slot}\n")
        log_file.flush()
        # Own session: a terminal Ctrl-C reaches the sweep only, which stops each worker once.
        proc = subprocess.Popen(cmd, env=safe_env(env), stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        return _Job(p, slot, proc, log_file, time.perf_counter())

    def collect(job: _Job, code: int) -> None:
        job.log_file.close()
        p = job.run
        result = _read_result(p.dir)
        secs = time.perf_counter() - job.started
        if code == 75:
            kind, text = "skipped", "locked by another process"
        elif code == 76:
            kind, text = "skipped", "finished by another process since planned"
        elif result is not None and code in (0, 1, 3):
            status = str(result.get("status"))
            kind = "finished" if status == "finished" else status.split(":")[0]
            text = f"test {100 * result['test_acc']:.2f}%" if status == "finished" and result.get("test_acc") \
                is not None else status
        else:
            tail = (p.dir / "worker.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
            kind, text = "failed", f"worker exited with status {code}: {tail[0][:200]}"
            _fail_record(p, text)
        outcome[kind] += 1
        say(f"[{sum(outcome.values())}/{len(todo)}] {kind:<8} {p.label}  {text}  ({secs:.0f}s)")

    try:
        while queue or running:
            free = [s for s in slots if s not in {j.slot for j in running}]
            while queue and free:
                running.append(launch(queue.pop(0), free.pop(0)))
            time.sleep(poll_s)
            for job in list(running):
                code = job.proc.poll()
                if code is not None:
                    running.remove(job)
                    collect(job, code)
                    done_steps[id(job.run)] = job.run.cfg.train.steps
                else:
                    done_steps[id(job.run)] = _last_step(job.run.dir / records.METRICS)
            if bar is not None:
                bar.n = sum(done_steps.values())
                bar.set_postfix_str(" ".join(f"{k} {v}" for k, v in sorted(outcome.items())) or "", refresh=False)
                bar.refresh()
    except KeyboardInterrupt:
        say(f"interrupted: stopping {len(running)} worker(s) at their last checkpoint ...")
        for job in running:
            if job.proc.poll() is None:
                job.proc.send_signal(signal.SIGINT)
        deadline = time.time() + 60
        for job in running:
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
            job.log_file.close()
        outcome["interrupted"] += len(running) + len(queue)
        raise
    finally:
        if bar is not None:
            bar.close()
    return dict(outcome)


def grid_hash(cfgs: list[RunConfig]) -> str:
    return hashlib.sha256(",".join(sorted(c.hash() for c in cfgs)).encode()).hexdigest()[:10]


def _device_name(gpus: list[str]) -> str:
    if gpus:
        import torch

        return f"{len(gpus)} x {torch.cuda.get_device_name(0)}"
    import platform

    return f"cpu ({_cores()} cores, {platform.processor() or platform.machine()})"


def sweep(tasks: str | None = None, attention: str | None = None, seeds: str | None = None,
          protocol: str | None = None, sets: Iterable[str] = (), sources: Iterable[str] = (),
          out: str | Path = "runs", shard_spec: str | None = None, jobs_per_gpu: int = 1,
          grid_file: str | Path | None = None, device: str = "auto", resume: bool = True,
          keep_checkpoints: bool = False, retry_diverged: bool = False, dry_run: bool = False,
          threads: int | None = None, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole ``lra sweep`` command with plain arguments; returns the summary it writes
    to ``<out>/_sweeps/``. User errors raise ConfigError / DataError before anything runs."""
    t0 = time.perf_counter()
    if jobs_per_gpu < 1:
        raise ConfigError("--jobs-per-gpu must be >= 1")
    out = Path(out)
    grid = make_grid(tasks, attention, seeds, protocol, sets, sources, grid_file)
    cfgs = plan(grid)
    sh = parse_shard(shard_spec)
    mine = shard(cfgs, *sh) if sh else cfgs
    planned = [run_status(out, c) for c in mine]
    where = f" (shard {sh[0]}/{sh[1]}: {len(mine)} of {len(cfgs)} runs)" if sh else ""
    log(f"sweep {grid.protocol}: {len(grid.tasks)} task(s) x {len(grid.attention)} variant(s) x "
        f"{len(grid.seeds)} seed(s){where} -> {out}")
    log(plan_table(planned))
    runnable = {TODO, PARTIAL, FAILED} | ({DIVERGED} if retry_diverged else set())
    todo = [p for p in planned if p.status in runnable]
    if dry_run:
        return {"planned": len(planned), "to_run": len(todo), "dry_run": True}

    gpus = gpu_ids(device)
    if todo:  # data once per parameter set, here: K workers must not each build it
        from tasks.base import Progress
        from tasks.cache import prepare

        bar_factory = None
        if progress:
            from lra.train import tqdm_factory

            bar_factory = tqdm_factory()
        for task, data, source in {(p.cfg.task, json.dumps(p.cfg.data, sort_keys=True), p.cfg.source)
                                   for p in todo}:
            prepare(task, json.loads(data), source, progress=Progress(bar_factory))

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_exec = time.perf_counter()
    outcome: Counter[str] = Counter()
    interrupted = False
    try:
        if todo:
            execute(todo, out, jobs_per_gpu, device, resume, keep_checkpoints, progress, log, outcome=outcome,
                    threads=threads)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        wall = time.perf_counter() - t_exec
        ran = sum(v for k, v in outcome.items() if k in ("finished", "diverged", "failed"))
        summary = {
            "grid_hash": grid_hash(cfgs), "protocol": grid.protocol, "tasks": grid.tasks,
            "attention": grid.attention, "seeds": grid.seeds, "shard": f"{sh[0]}/{sh[1]}" if sh else None,
            "runs_in_grid": len(cfgs), "runs_planned": len(planned), "runs_to_run": len(todo), "runs": ran,
            "outcome": dict(outcome), "interrupted": interrupted, "wall_seconds": round(wall, 3),
            "total_seconds": round(time.perf_counter() - t0, 3),
            "runs_per_hour": round(ran / (wall / 3600), 3) if ran and wall > 0 else 0.0,
            "jobs_per_gpu": jobs_per_gpu, "gpus": len(gpus), "device": _device_name(gpus),
            "host": socket.gethostname(), "started": started,
        }
        if todo:
            name = f"sweep-{started.replace(':', '').replace('-', '')}-{summary['grid_hash']}"
            if sh:
                name += f"-shard{sh[0]}of{sh[1]}"
            summary["path"] = str(out / SWEEPS_DIR / f"{name}.json")
            records.write_json_atomic(Path(summary["path"]), summary)
    log(f"ran {ran} run(s) in {wall:.0f}s: {summary['runs_per_hour']:.1f} runs/hour on {summary['device']} "
        f"({jobs_per_gpu} job(s) per {'GPU' if gpus else 'CPU'}); " +
        (", ".join(f"{v} {k}" for k, v in sorted(outcome.items())) or "nothing to do"))
    if "path" in summary:
        log(f"summary: {summary['path']}")
    wanted = {str(run_dir(out, c)) for c in cfgs}
    runs = [r for r in records.load_runs(out) if r["dir"] in wanted]
    summary["report"] = {k: v for k, v in finish_sweep(out, runs, log).items() if k != "table"}
    summary["final"] = dict(Counter(run_status(out, c).status for c in mine))
    return summary


def run_single(task: str, attention: str = "softmax", protocol: str = "skyformer", seed: int = 0,
               sets: dict[str, str] | None = None, source: str | None = None, out: str | Path = "runs",
               device: str = "auto", progress: bool = True, resume: bool = True, keep_checkpoint: bool = False,
               devices: int = 1, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The body of ``lra run``: one config, in this process or on ``devices`` processes
    (torchrun DDP). Returns the result dict (with ``dir``). Raises RunLocked when another
    process trains the same run."""
    from lra.train import pick_device, train

    cfg = resolve_run(task, attention, protocol, seed, sets or {}, source)
    if devices <= 1:
        return train(cfg, Path(out), pick_device(device), progress=progress, log=log, resume=resume,
                     keep_checkpoint=keep_checkpoint)
    from lra import distributed
    from tasks.base import Progress
    from tasks.cache import prepare

    if cfg.train.batch_size % devices:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is not divisible by --devices {devices}")
    d = run_dir(Path(out), cfg)
    if checkpoint.is_locked(d):  # torchrun folds the workers' exit statuses into one: ask first
        raise checkpoint.RunLocked(f"{d} is being trained by another process")
    prepare(cfg.task, cfg.data, cfg.source, progress=Progress(None))
    code = distributed.launch(cfg.to_dict(), Path(out), devices, device, resume, keep_checkpoint, progress)
    result = _read_result(d)
    if result is None or (code != 0 and result.get("status") == "finished"):
        result = {"status": f"failed: torchrun exited with status {code} (see its output above)"}
    return {**result, "dir": str(d)}


__all__ = ["Grid", "PlannedRun", "execute", "finish_sweep", "make_grid", "parse_seeds", "parse_shard", "plan",
           "plan_table", "resolve_run", "run_single", "run_status", "shard", "split_specs", "sweep"]
