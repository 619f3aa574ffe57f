"""One run in its own process: ``python -m lra.worker --out runs CONFIG_JSON``.

The sweep starts one of these per run (a crash, a CUDA error or an out-of-memory kill
then costs that run only), and ``lra run --devices N`` starts N of them under torchrun.
CONFIG_JSON is a resolved ``RunConfig`` as JSON, or ``@path`` to a file holding it.

Exit status: 0 finished, 3 diverged, 1 failed (recorded in result.json, traceback in
error.txt), 2 bad input, 75 the run is locked by another process, 76 already finished
(with --skip-finished), 130 interrupted (SIGINT/SIGTERM; the last checkpoint stays).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

EXIT_FINISHED, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_LOCKED, EXIT_DONE, EXIT_INTERRUPTED = 0, 1, 2, 3, 75, 76, 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _watch_parent(parent: int) -> None:
    """A sweep killed outright (SIGKILL) cannot forward Ctrl-C; its orphans stop themselves."""
    while True:
        time.sleep(2)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGINT)
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lra.worker", description=__doc__.splitlines()[0])
    p.add_argument("config", help="resolved RunConfig as JSON, or @path")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--keep-checkpoint", action="store_true")
    p.add_argument("--skip-finished", action="store_true", help="exit 76 if the run is already finished")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--watch-parent", action="store_true")
    p.add_argument("--runs-per-device", type=int, default=1,
                   help="runs sharing this device at once (recorded; device_seconds = wall / this)")
    args = p.parse_args(argv)

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (nohup, &)
    if args.watch_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from attention_zoo.registry import HyperparameterError, UnknownVariantError
    from lra import distributed
    from lra.checkpoint import RunLocked
    from lra.config import ConfigError, RunConfig
    from lra.train import pick_device, train
    from tasks.base import DataError, UnknownTaskError

    text = Path(args.config[1:]).read_text() if args.config.startswith("@") else args.config
    cfg = RunConfig.from_dict(json.loads(text))
    try:
        dist, dev = distributed.init_from_env(args.device)
        device = dev or pick_device(args.device)
        result = train(cfg, Path(args.out), device, progress=args.progress, log=lambda m: print(m, flush=True),
                       resume=args.resume, keep_checkpoint=args.keep_checkpoint, skip_finished=args.skip_finished,
                       runs_per_device=args.runs_per_device)
    except RunLocked as e:
        print(f"skipped: {e}", file=sys.stderr, flush=True)
        return EXIT_LOCKED
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint stays; run again to resume", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (ConfigError, DataError, UnknownTaskError, UnknownVariantError, HyperparameterError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    finally:
        distributed.shutdown()
    if result.get("skipped"):
        print(f"skipped: already finished ({result['dir']})", flush=True)
        return EXIT_DONE
    if result["status"] == "finished":
        if dist.main:
            print(f"finished: test acc {result['test_acc']:.4f}  record {result['dir']}", flush=True)
        return EXIT_FINISHED
    return EXIT_DIVERGED


if __name__ == "__main__":
    sys.exit(main())
