"""``lra``: run LRA tasks against the attention zoo and turn the records into tables.

Every command prints one clear ``error:`` line and exits non-zero on bad input
(unknown task or variant, bad hyperparameters, missing or malformed data).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from lra.config import split_specs

DEFAULT_RUNS = os.environ.get("LRA_RUNS", "runs")


def _user_errors() -> tuple[type[BaseException], ...]:
    from attention_zoo.registry import HyperparameterError, UnknownVariantError
    from lra.config import ConfigError
    from tasks.base import DataError, UnknownTaskError

    from lra.bench_kernels import CudaRequired
    from lra.checkpoint import RunLocked

    return (ConfigError, DataError, UnknownTaskError, UnknownVariantError, HyperparameterError, RunLocked,
            CudaRequired)


class LRAGroup(click.Group):
    """Turns the suite's own input errors into one line and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _user_errors() as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _parse_sets(items: tuple[str, ...]) -> dict[str, str]:
    from lra.config import kv_pairs

    return kv_pairs(items, "--set")


@click.group(cls=LRAGroup, context_settings={"help_option_names": ["-h", "--help"]})
def lra() -> None:
    """Long Range Arena: run tasks against attention variants, tabulate and plot the results.

    \b
    lra run listops --attention polarity:alpha=3 --protocol quick
    lra table
    """


@lra.command()
@click.argument("task")
@click.option("--attention", "-a", default="softmax", show_default=True,
              help="Variant and hyperparameters, e.g. 'polarity:alpha=5'. See the zoo.")
@click.option("--protocol", "-p", default="skyformer", show_default=True,
              help="Preset: skyformer, nystromformer, lra or quick.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any config field: train.lr=1e-3, model.layers=4, data.seq_len=512. Repeatable.")
@click.option("--source", default=None, help="Data source: 'generate', 'hub' or a local path (task default if unset).")
@click.option("--out", default=DEFAULT_RUNS, show_default=True, type=click.Path(file_okay=False),
              help="Folder for run records ($LRA_RUNS).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--devices", default=1, show_default=True, type=click.IntRange(min=1),
              help="Processes for this one run (DDP under torchrun): one per GPU, or gloo processes on CPU. "
                   "train.batch_size stays the global batch.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the checkpoint a killed or interrupted run left.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep the final checkpoint (deleted when the run ends).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def run(task: str, attention: str, protocol: str, seed: int, sets: tuple[str, ...], source: str | None,
        out: str, device: str, devices: int, resume: bool, keep_checkpoints: bool, progress: bool) -> None:
    """Train TASK with one attention variant under a protocol; test the best-val weights once.

    Writes a run record (config.json, metrics.jsonl, result.json) under --out and prints
    the validation and test accuracy. A checkpoint is saved at every evaluation; running
    the same command again after a kill or Ctrl-C resumes it.
    """
    from lra.sweep import run_single

    result = run_single(task, attention, protocol, seed, _parse_sets(sets), source, Path(out), device,
                        progress=progress, resume=resume, keep_checkpoint=keep_checkpoints, devices=devices)
    if result["status"] != "finished":
        click.echo(f"error: run {result['status']} (record in {result['dir']})", err=True)
        sys.exit(1)
    best = (f"best val acc {100 * result['best_val_acc']:.2f}% (step {result['best_step']})"
            if result["best_step"] is not None else "no best checkpoint kept: the final model was tested")
    click.echo(
        f"{best}  test acc {100 * result['test_acc']:.2f}%  (majority class {100 * result['test_majority_rate']:.2f}%)  "
        f"{result['wall_seconds']:.0f}s\nrecord: {result['dir']}"
    )


# --- new command ---------------------------------------------------------------------
@lra.command("sweep")
@click.option("--tasks", "-t", default=None, help="Comma-separated tasks, e.g. listops,pathfinder.")
@click.option("--attention", "-a", default=None,
              help="Comma-separated variant specs (default softmax); 'polarity:alpha=3,backend=torch' stays one spec.")
@click.option("--seeds", default=None, help="'0,1,2' or '0-4' (default 0).")
@click.option("--protocol", "-p", default=None, help="Preset for every run (default skyformer).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override for every run. Repeatable.")
@click.option("--source", "sources", multiple=True, metavar="TASK=PATH", help="Data source of one task. Repeatable.")
@click.option("--grid", "grid_file", default=None, type=click.Path(dir_okay=False),
              help="TOML grid file (tasks, attention, seeds, protocol, [set], [source]); options override it.")
@click.option("--out", default=DEFAULT_RUNS, show_default=True, type=click.Path(file_okay=False),
              help="Folder for run records ($LRA_RUNS).")
@click.option("--shard", "shard_spec", default=None, metavar="I/N",
              help="Run only shard I of N (0-based) of the grid, e.g. $SLURM_ARRAY_TASK_ID/4.")
@click.option("--jobs-per-gpu", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs at once on each GPU (on CPU: parallel processes).")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch threads per run (default: the cores shared among the concurrent runs).")
@click.option("--device", default="auto", show_default=True, help="auto (every visible GPU, else CPU), cpu, cuda, cuda:1")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue partial runs from their checkpoints (--no-resume restarts them).")
@click.option("--keep-checkpoints", is_flag=True, help="Keep each run's final checkpoint.")
@click.option("--retry-diverged", is_flag=True, help="Rerun runs recorded as diverged (skipped by default).")
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def sweep_cmd(tasks, attention, seeds, protocol, sets, sources, grid_file, out, shard_spec, jobs_per_gpu, threads,
              device, resume, keep_checkpoints, retry_diverged, dry_run, progress) -> None:
    """Run a grid: tasks x attention variants x seeds under one protocol.

    \b
    lra sweep --tasks listops,pathfinder --attention softmax,linear,polarity:alpha=3 \\
              --seeds 0,1,2 --protocol skyformer --jobs-per-gpu 2
    lra sweep --grid grid.toml --shard 0/4

    Shows the planned runs (done / to run / partial), skips finished ones, resumes partial
    ones, records a failure or divergence and goes on; ends with the results table, the
    figures and a summary (runs/hour) under OUT/_sweeps/. Ctrl-C stops at the last
    checkpoints; the same command resumes.
    """
    from lra.sweep import sweep as run_sweep

    summary = run_sweep(tasks, attention, seeds, protocol, sets, sources, Path(out), shard_spec, jobs_per_gpu,
                        grid_file, device, resume, keep_checkpoints, retry_diverged, dry_run, threads,
                        progress=progress, log=click.echo)
    if summary.get("outcome", {}).get("failed"):
        sys.exit(1)


@lra.command()
@click.option("--runs", "runs_dirs", default=(DEFAULT_RUNS,), show_default=True, multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Folder of run records (repeatable: e.g. a diagnostic sweep beside the main one; "
                   "a run found in two folders counts once, as the table does for any duplicate).")
@click.option("--protocol", default=None, help="Only runs of this protocol.")
@click.option("--task", "tasks", multiple=True,
              help="Only these tasks (repeatable or comma-separated): listops, text, retrieval, image, pathfinder.")
@click.option("--variant", "variants", multiple=True,
              help="Only these variants (repeatable or comma-separated); a bare name such as 'polarity' "
                   "selects all its hyperparameter settings.")
@click.option("--order", type=click.Choice(["lra", "polaformer"]), default="lra", show_default=True,
              help="Task columns as the LRA paper (listops, text, retrieval, image, pathfinder) or the "
                   "PolaFormer README (text, listops, retrieval, pathfinder, image).")
@click.option("--compare", type=click.Choice(["polaformer", "lra", "skyformer", "nystromformer"]), default=None,
              help="Add that published table's rows and a column per task: ours minus published.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "csv"]), default="markdown",
              show_default=True)
@click.option("--times", is_flag=True, help="Add the mean wall time per run and the summed compute time per row.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the table to this file.")
def table(runs_dirs, protocol, tasks, variants, order, compare, fmt, times, out) -> None:
    """Print the accuracy table of the run records: variants x tasks, mean ± std over seeds, the average."""
    from lra.records import load_runs, write_text_atomic
    from results.table import render_table

    try:
        text = render_table(load_runs(*map(Path, runs_dirs)), order=order, compare=compare, fmt=fmt,
                            tasks=[t for item in tasks for t in item.split(",") if t] or None,
                            variants=split_specs(",".join(variants)) or None, protocol=protocol, times=times)
    except ValueError as e:
        raise click.ClickException(f"{e} (runs: {', '.join(runs_dirs)})") from None
    click.echo(text)
    if out:
        write_text_atomic(Path(out), text + "\n")
        click.echo(f"wrote {out}", err=True)


# = results.plots.FIGURES, kept literal so `lra --help` does not import matplotlib
PLOT_FIGURES = ("accuracy", "bubble", "speed", "curves", "alpha", "attention_maps")


@lra.command()
@click.option("--runs", "runs_dir", default=DEFAULT_RUNS, show_default=True, type=click.Path(file_okay=False),
              help="Folder of run records.")
@click.option("--out", "out_dir", default="figures", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the figures (<name>.png and <name>.pdf).")
@click.option("--bench", "bench_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Speed rows from `lra bench speed --out FILE` (repeatable); the bubble and speed figures need them.")
@click.option("--only", multiple=True, type=click.Choice(PLOT_FIGURES),
              help="Make only this figure (repeatable); default: every figure there is data for.")
@click.option("--protocol", default=None, help="Only runs of this protocol (default: the protocol with most runs).")
@click.option("--published", default="auto", show_default=True,
              help="Published markers: auto (the table of the runs' protocol), a source "
                   "(polaformer, skyformer, lra, nystromformer) or none.")
@click.option("--task", default=None, help="Task of the attention-map input (default: listops, else image).")
def plot(runs_dir: str, out_dir: str, bench_files: tuple[str, ...], only: tuple[str, ...], protocol: str | None,
         published: str, task: str | None) -> None:
    """Figures from the run records and speed rows, as PNG and PDF: accuracy per task, the
    LRA bubble chart, speed/memory against length, validation curves, accuracy against
    alpha, and attention maps with their row entropy.

    \b
    lra plot --runs runs --out figures --bench results/bench/speed.json
    lra plot --only attention_maps --task image
    """
    from results.plots import plot_all

    made = plot_all(Path(runs_dir), Path(out_dir), [Path(b) for b in bench_files] or None,
                    only=list(only) or None, protocol=protocol,
                    published=None if published.lower() == "none" else published, task=task,
                    note=lambda msg: click.echo(msg, err=True))
    for path in made:
        click.echo(f"wrote {path}")
    if not made:
        raise click.ClickException("no figure made (see the notes above)")


@lra.group()
def data() -> None:
    """Prepare and inspect task data (cached under $LRA_DATA, one folder per parameter set)."""


@data.command("prepare")
@click.argument("task")
@click.option("--source", default=None,
              help="'generate', 'hub' or a local path (release folder, parquet folder, aclImdb/, pickles).")
@click.option("--size", type=int, default=None, help="At most N rows per split (generators make only that many).")
@click.option("--protocol", "-p", default=None,
              help="Take the data parameters of this protocol (e.g. quick: short ListOps, small subsets).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Data parameter, e.g. seq_len=1000.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def data_prepare(task: str, source: str | None, size: int | None, protocol: str | None, sets: tuple[str, ...],
                 progress: bool) -> None:
    """Build the prepared arrays of TASK once; a second call with the same parameters does nothing.

    Prints the cache folder, the split sizes and the class balance.
    """
    import json
    import time

    from lra import protocols
    from lra.train import tqdm_factory
    from tasks import get_task
    from tasks.base import Progress
    from tasks.cache import open_prepared, prepare

    get_task(task)
    params = protocols.resolve(task, protocol, "softmax").data if protocol else {}
    params.update(_parse_sets(sets))
    if size is not None:
        params["size"] = size
    t0 = time.perf_counter()
    path = prepare(task, params, source, progress=Progress(tqdm_factory() if progress else None))
    meta = open_prepared(path).meta
    click.echo(f"{path}  ({time.perf_counter() - t0:.1f}s; built in {meta['prepare_seconds']:.1f}s)")
    click.echo(f"counts {json.dumps(meta['counts'])}  seq_len {meta['seq_len']}  vocab {meta['vocab_size']}")
    click.echo(f"class balance {json.dumps(meta['class_balance'])}")


@data.command("info")
def data_info() -> None:
    """List the prepared caches: task, source, parameters, counts, size on disk."""
    from tasks.cache import data_root, list_prepared

    caches = list_prepared()
    if not caches:
        click.echo(f"no prepared data under {data_root()}")
        return
    for c in caches:
        mb = sum(f.stat().st_size for f in c.path.iterdir()) / 2**20
        params = ", ".join(f"{k}={v}" for k, v in c.meta["params"].items())
        click.echo(f"{c.meta['task']:<11} {c.meta['counts']}  {mb:,.0f} MB  source={c.meta['source']}  {params}")
        click.echo(f"            {c.path}")


@lra.group()
def zoo() -> None:
    """The attention variants: hyperparameters, defaults and complexity."""


@zoo.command("list")
def zoo_list() -> None:
    """Every variant with its hyperparameters (defaults) and time / memory complexity."""
    import attention_zoo

    for name in attention_zoo.names():
        v = attention_zoo.get(name)
        hp = ", ".join(f"{k}={val}" for k, val in v.defaults().items()) or "-"
        click.echo(f"{name:<14} time {v.time:<12} memory {v.memory:<12} {hp}")
        click.echo(f"{'':<14} {v.summary}")


@zoo.command("show")
@click.argument("name")
def zoo_show(name: str) -> None:
    """Document one variant: what it computes, its hyperparameters and their types."""
    import dataclasses
    import typing

    import attention_zoo

    v = attention_zoo.get(name)
    click.echo(f"{name}  (time {v.time}, memory {v.memory})\n")
    click.echo(v.doc() + "\n")
    hints = typing.get_type_hints(v.hparams)
    fields = dataclasses.fields(v.hparams)
    for f in fields:
        typ = hints[f.name]
        shown = typ.__name__ if isinstance(typ, type) else str(typ).replace("typing.", "")
        click.echo(f"  {f.name}: {shown} = {v.defaults()[f.name]!r}")
    from lra import protocols

    for proto in protocols.protocol_names():
        own = protocols.attention_defaults(proto, name)
        if own:
            click.echo(f"  under --protocol {proto}: " + ", ".join(f"{k}={val!r}" for k, val in own.items()))
    click.echo(f"\nuse: lra run TASK --attention {name}" + (f":{fields[0].name}=..." if fields else ""))


def _ints(text: str) -> list[int]:
    from lra.config import ConfigError

    try:
        return [int(float(v.lower().replace("k", "e3"))) for v in text.split(",") if v]
    except ValueError:
        raise ConfigError(f"expected a comma-separated list of integers (1k = 1000), got {text!r}") from None


def _save_bench(rows, out: str | None, kind: str) -> None:
    from lra import records

    if out:
        records.write_json_atomic(Path(out), {"kind": kind, "env": records.environment(), "rows": rows})
        click.echo(f"wrote {out}")


@lra.group()
def bench() -> None:
    """Speed and memory benchmarks (median of repeated steps, baseline in the same run)."""


@bench.command("speed")
@click.option("--attention", "-a", default="softmax,softmax_naive,linear,performer,nystromformer,polarity:alpha=3",
              show_default=True, help="Comma-separated variant specs ('polarity:alpha=3,backend=torch' stays one).")
@click.option("--lengths", default="1024,2048,3072,4096", show_default=True, help="Sequence lengths (1k = 1000).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--protocol", "-p", default="skyformer", show_default=True, help="Model of this protocol's text task.")
@click.option("--repeat", default=10, show_default=True, type=int)
@click.option("--out", default=None, help="Write the rows as JSON here (e.g. results/bench/speed.json).")
def bench_speed(attention: str, lengths: str, batch_size: int, protocol: str, repeat: int, out: str | None) -> None:
    """LRA Table 2: byte-level text training steps/s and peak memory per variant and length,
    each relative to softmax (measured in the same run)."""
    from lra import bench as lbench
    from results.table import speed_table

    import attention_zoo

    specs = split_specs(attention)
    for spec in specs:
        name, hp = attention_zoo.parse_spec(spec)
        attention_zoo.make_hparams(name, **hp)
    if "softmax" not in specs:
        specs = ["softmax", *specs]
    rows = lbench.speed(specs, _ints(lengths), batch_size, protocol, repeat=repeat, progress=click.echo)
    click.echo(speed_table(rows))
    _save_bench(rows, out, "speed")


@bench.command("layers")
@click.option("--attention", "-a", default=None, help="Comma-separated variant specs (default: the whole zoo).")
@click.option("--lengths", default="1024,4096,16384", show_default=True)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--dim", default=64, show_default=True, type=int)
@click.option("--heads", default=2, show_default=True, type=int)
@click.option("--out", default=None, help="Write the rows as JSON here.")
def bench_layers(attention: str | None, lengths: str, batch_size: int, dim: int, heads: int, out: str | None) -> None:
    """One attention layer, forward+backward (bf16 autocast on CUDA): time and peak memory."""
    import attention_zoo
    from lra import bench as lbench
    from results.table import layers_table

    specs = split_specs(attention) if attention else attention_zoo.names()
    rows = lbench.layers(specs, _ints(lengths), batch_size, dim, heads, progress=click.echo)
    click.echo(layers_table(rows))
    _save_bench(rows, out, "layers")


@bench.command("input")
@click.argument("task")
@click.option("--protocol", "-p", default="skyformer", show_default=True)
@click.option("--attention", "-a", default="softmax", show_default=True)
@click.option("--source", default=None)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
def bench_input(task: str, protocol: str, attention: str, source: str | None, sets: tuple[str, ...]) -> None:
    """The input pipeline's share of a training step: fetching a batch alone vs a whole step."""
    import json

    from lra import bench as lbench

    click.echo(json.dumps(lbench.input_share(task, protocol, attention, source, _parse_sets(sets)), indent=1))


@bench.command("kernels")
@click.option("--out", default=None, help="Write the rows as JSON here.")
@click.option("--dtype", default="bf16", show_default=True, type=click.Choice(["bf16", "fp16", "fp32"]))
@click.option("--graphs/--no-graphs", default=True, show_default=True,
              help="Also time each call replayed as a CUDA graph (GPU time without host work).")
def bench_kernels(out: str | None, dtype: str, graphs: bool) -> None:
    """Polarity attention: Triton kernel vs PyTorch reference vs SDPA flash, fwd and fwd+bwd,
    eager and as CUDA-graph replays, at the LRA shapes and a length sweep; achieved
    bandwidth against a copy (CUDA only)."""
    from lra import bench_kernels as bk

    rows = bk.run(None, None, dtype=dtype, out_json=out, progress=click.echo, graphs=graphs)
    click.echo(bk.format_table(rows))


def main() -> None:
    lra(prog_name="lra")


if __name__ == "__main__":
    main()
