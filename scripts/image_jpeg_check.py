"""Can JPEG re-encoding of CIFAR-10 plausibly cost the LRA Image task accuracy points?

python scripts/image_jpeg_check.py [--qualities 75,40,15] [--epochs N] [--out FILE]

Our CIFAR-10 (``../shared/data/cifar10``, HF parquet) is a public re-encoding as JPEG
quality 75, not the lossless original, and no lossless copy is at hand. This script
measures how sensitive a pixel-token classifier is to JPEG loss instead: every image is
decoded to RGB uint8 and re-encoded with Pillow at each of ``--qualities`` (Pillow defaults
otherwise); each re-encoded set is read by the task's own loader
(``get_task("image").build``: decoding, ``rgb_to_grayscale``, LRA's 45,000 / 5,000 / 10,000
split with ``split_seed`` 0), exactly like the images as given.

It measures
  (a) how far each re-encoding moves the pixels from the images as given: mean absolute
      difference, fraction of values that change and PSNR, for the grayscale tokens and for
      each RGB channel;
  (b) what that does to a small classifier that, like the LRA models, sees each pixel's
      gray value as a discrete token (``nn.Embedding(256, 8)`` per pixel, then a 3-block
      CNN of ~88k parameters): one model per version (same seed, same hyperparameters, same
      batch order), tested on its own version's test set and on the given one; a second
      model on the given images with another seed shows how much accuracy moves from the
      seed alone.

How to read it. The given images already carry Pillow's quality-75 tables, so a second
pass at 75 is nearly a no-op; lower qualities quantise harder and move the pixels further
(lower PSNR). If accuracy stays flat down to a re-encoding whose PSNR is below what a
first quality-75 pass costs natural 32x32 images, JPEG loss of that size does not matter to
this classifier. That is a hint, not a proof: a CNN is not the LRA transformer, and losses
from a second encoding add to the first rather than replace it.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, JpegImagePlugin

from tasks import get_task
from tasks.base import Progress
from tasks.image import CHUNK, SIZE, image_blobs, ordered_map, rgb_to_grayscale
from tasks.text import find_parquet, read_parquet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"
DEFAULT_OUT = ROOT / "results" / "reproduced" / "diagnostics" / "image_jpeg_check.json"
QUALITIES = (75, 40, 15)
SPLITS = ("train", "test")
WIDTHS = (16, 64, 128)
EMBED_DIM = 8
BATCH = 128
EVAL_BATCH = 1000


def _reencode(blobs: list[bytes], quality: int) -> tuple[np.ndarray, np.ndarray, list[bytes], int]:
    """Encoded images -> (RGB as given, RGB after one more JPEG pass at ``quality``, the new
    JPEG bytes, how many given images carry the new encoding's tables and chroma subsampling).

    Decoding is the task's: ``Image.open(...).convert("RGB")`` to uint8 (``tasks.image``
    keeps that inside ``_decode_gray``, which returns only grayscale; ``main`` checks that
    both give the same tokens)."""
    n = len(blobs)
    given = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    again = np.empty_like(given)
    encoded = []
    same_quantizer = 0
    for i, blob in enumerate(blobs):
        with Image.open(io.BytesIO(blob)) as im:
            given[i] = np.asarray(im.convert("RGB"))
            source_tables = (getattr(im, "quantization", None), JpegImagePlugin.get_sampling(im))
        buf = io.BytesIO()
        Image.fromarray(given[i]).save(buf, format="JPEG", quality=quality)
        encoded.append(buf.getvalue())
        with Image.open(io.BytesIO(encoded[-1])) as im:
            again[i] = np.asarray(im.convert("RGB"))
            same_quantizer += source_tables == (im.quantization, JpegImagePlugin.get_sampling(im))
    return given, again, encoded, same_quantizer


def change_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Difference between two uint8 arrays of the same shape, as 8-bit values."""
    d = b.astype(np.int16) - a.astype(np.int16)
    mse = float(np.mean(d.astype(np.float64) ** 2))
    return {
        "mean_abs_diff": float(np.mean(np.abs(d))),
        "mean_signed_diff": float(np.mean(d)),
        "max_abs_diff": int(np.max(np.abs(d))),
        "fraction_changed": float(np.mean(d != 0)),
        "psnr_db": float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf"),
    }


def make_reencoded(data: Path, quality: int, out_folder: Path) -> tuple[dict, dict]:
    """Write ``train.parquet``/``test.parquet`` of images re-encoded at ``quality`` to
    ``out_folder`` (same rows, same labels). Returns RGB per version ("given", "q<quality>")
    and split, and how many given JPEGs already carry that quality's tables."""
    version = f"q{quality}"
    rgb = {"given": {}, version: {}}
    same_quantizer = 0
    for split in SPLITS:
        files = find_parquet(data, split)
        if not files:
            raise SystemExit(f"{data}: no {split}.parquet (HF layout, columns img and label)")
        table = read_parquet(files, ("img", "label"))
        blobs = image_blobs(table, str(files[0]))
        chunks = [blobs[i : i + CHUNK] for i in range(0, len(blobs), CHUNK)]
        given, again, encoded = [], [], []
        for g, a, enc, same in ordered_map(functools.partial(_reencode, quality=quality), chunks):
            given.append(g)
            again.append(a)
            encoded += enc
            same_quantizer += same
        rgb["given"][split], rgb[version][split] = np.concatenate(given), np.concatenate(again)
        img = pa.StructArray.from_arrays(
            [pa.array(encoded, pa.binary()), pa.array([None] * len(encoded), pa.string())], names=["bytes", "path"]
        )
        pq.write_table(pa.table({"img": img, "label": table.column("label")}), out_folder / f"{split}.parquet")
    images = sum(len(a) for a in rgb["given"].values())
    return rgb, {"images": images, "given_with_the_same_tables_and_subsampling": same_quantizer}


def token_change(given: dict, again: dict) -> dict:
    """Pixel statistics between two versions over every image (train and test)."""
    a, b = (np.concatenate([v[s] for s in SPLITS]) for v in (given, again))
    stats = {"images": len(a), "gray_tokens": change_stats(rgb_to_grayscale(a), rgb_to_grayscale(b))}
    for c, name in enumerate("RGB"):
        stats[f"rgb_{name}"] = change_stats(a[..., c], b[..., c])
    return stats


class TokenCNN(nn.Module):
    """Gray value -> learned 8-d embedding per pixel, then conv-BN-ReLU-maxpool blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, EMBED_DIM)
        layers, c = [], EMBED_DIM
        for w in WIDTHS:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, 1024) integer tokens
        x = self.embed(tokens.long()).view(-1, SIZE, SIZE, EMBED_DIM).permute(0, 3, 1, 2)
        return self.body(x)  # the permuted view is channels_last in memory, like the weights


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    hits = 0
    for i in range(0, len(y), EVAL_BATCH):
        hits += int((net(x[i : i + EVAL_BATCH]).argmax(1) == y[i : i + EVAL_BATCH]).sum())
    return hits / len(y)


def train(version: str, seed: int, train_set, tests: dict, args, t0: float) -> dict:
    """Train one TokenCNN on ``version``; test accuracy on every test set after each epoch."""
    name = f"{version},seed{seed}"
    x, y = train_set
    torch.manual_seed(seed)
    net = TokenCNN().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * -(-len(y) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    order = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, args.epochs + 1):
        net.train()
        total = 0.0
        for idx in torch.randperm(len(y), generator=order).split(BATCH):
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / len(y)}
        row.update({f"test_acc_{t}": accuracy(net, *xy) for t, xy in tests.items()})
        row["elapsed_s"] = round(time.time() - t0, 1)
        history.append(row)
        accs = "  ".join(f"{t} test {row[f'test_acc_{t}']:.2%}" for t in tests)
        print(f"[{name}] epoch {epoch}/{args.epochs}  loss {row['train_loss']:.4f}  {accs}  {row['elapsed_s']:.0f}s",
              flush=True)
    params = sum(p.numel() for p in net.parameters())
    final = {f"{t}_test": history[-1][f"test_acc_{t}"] for t in tests}
    return {"train_data": version, "seed": seed, "params": params, "epochs": history, "final": final}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qualities", default=",".join(map(str, QUALITIES)),
                    type=lambda t: [int(q) for q in t.split(",") if q.strip()],
                    help="JPEG qualities to re-encode at, comma-separated (default %(default)s)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per model (default 6: ~4 minutes a model on 2 cores)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON to write (default %(default)s)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 parquet folder (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the models of every version")
    ap.add_argument("--reference-seed", type=int, default=1, help="seed of the extra given-data model (-1: skip it)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    args = ap.parse_args()
    if args.epochs < 1:
        ap.error("--epochs must be at least 1")
    if not args.qualities or not all(1 <= q <= 95 for q in args.qualities):
        ap.error("--qualities must be JPEG qualities in 1..95")
    torch.set_num_threads(2)
    t0 = time.time()
    task = get_task("image")
    params = task.params()

    built = {"given": task.build(params, str(args.data), Progress())}
    stats, sources = {}, {}
    for q in args.qualities:
        version = f"q{q}"
        with tempfile.TemporaryDirectory(prefix=f"cifar10_{version}_") as tmp:
            rgb, sources[version] = make_reencoded(args.data, q, Path(tmp))
            built[version] = task.build(params, tmp, Progress())
        for v in ("given", version):  # our RGB decoding must be the one behind the task's tokens
            tokens = built[v].splits["test"][0]
            if not np.array_equal(rgb_to_grayscale(rgb[v]["test"]).reshape(tokens.shape), tokens):
                raise SystemExit(f"{v}: grayscale of our RGB decoding differs from the task's test tokens")
        stats[version] = token_change(rgb["given"], rgb[version])
        del rgb
        print(f"re-encoded {sources[version]['images']} images at quality {q}: gray PSNR "
              f"{stats[version]['gray_tokens']['psnr_db']:.2f} dB  {time.time() - t0:.0f}s", flush=True)
    data = {v: {s: tuple(map(torch.from_numpy, b.splits[s])) for s in SPLITS} for v, b in built.items()}
    del built

    runs = [("given", args.seed)] + [(f"q{q}", args.seed) for q in args.qualities]
    if args.reference_seed >= 0:
        runs.append(("given", args.reference_seed))
    models = {}
    for v, seed in runs:
        tests = {t: data[t]["test"] for t in dict.fromkeys((v, "given"))}
        models[f"{v},seed{seed}"] = train(v, seed, data[v]["train"], tests, args, t0)

    result = {
        "what": "LRA Image (CIFAR-10 grayscale tokens): images as given (JPEG q75) vs re-encoded by Pillow "
                "at each quality; a token CNN trained and tested on each version",
        "command": shlex.join(["python", *sys.argv]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": str(args.data),
        "source_jpeg": sources,
        "split": {s: len(data["given"][s][1]) for s in SPLITS} | {"split_seed": params["split_seed"]},
        "token_change_from_given": stats,
        "model": {"kind": "TokenCNN", "embed": [256, EMBED_DIM], "widths": list(WIDTHS), "batch": BATCH,
                  "optimizer": "AdamW", "schedule": "cosine to 0, per step, no warmup"},
        "runs": models,
        "final_test_acc": {k: m["final"] for k, m in models.items()},
        "versions": {
            "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__, "pillow": PIL.__version__
        },
        "torch_threads": torch.get_num_threads(),
        "run_seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.out)

    print("\nre-encoded from the images as given (gray tokens; all images)")
    print(f"{'version':8} {'mean|d|':>8} {'changed':>8} {'PSNR dB':>8}  given JPEGs with the same tables")
    for v, st in stats.items():
        g = st["gray_tokens"]
        print(f"{v:8} {g['mean_abs_diff']:8.3f} {g['fraction_changed']:8.1%} {g['psnr_db']:8.2f}  "
              f"{sources[v]['given_with_the_same_tables_and_subsampling']}/{sources[v]['images']}")
    print(f"\ntest accuracy after {args.epochs} epochs")
    print(f"{'trained on':16} {'own test':>9} {'given test':>11}")
    for k, m in models.items():
        own = k.split(",")[0]
        print(f"{k:16} {m['final'][own + '_test']:9.2%} {m['final']['given_test']:11.2%}")
    print(f"wrote {args.out}  ({result['run_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
