"""Pathfinder (LRA) and Path-X: are the two circles joined by one dashed contour? 2 classes.

One token per pixel of the uint8 grayscale image, row-major: ``seq_len = resolution**2``
(1024 at the default 32; Path-X is ``resolution=128``, 16384 tokens), vocab 256. Under
LRA's ``input > 0`` key mask (``mask_zero``, on by default for fidelity) the black
background, about two thirds of the pixels, is treated as padding.

Parameters: ``resolution`` (32, 64, 128), ``contour_length`` (14 "hard", 9, 6 = the
release's ``curv_baseline``), and for the generator ``n`` images (200,000) and ``seed``.
Splits are 80% / 10% / 10% in order (train gets ``n*8//10``, val ``n//10``, test the rest).

Sources:
- ``generate`` (default): ``tasks.pathfinder_gen.generate`` (LRA_SPEC §1.2 settings).
- a release folder: ``pathfinder32/curv_contour_length_14/`` itself, or a folder above it
  (``pathfinder<res>/curv_...`` or ``curv_...`` is looked up from the parameters), holding
  ``imgs/<batch>/sample_<i>.png`` and ``metadata/<batch>.npy``. A metadata file is either
  plain text (what the release ships despite the name), one line per image
  ``imgs/0 sample_0.png 0 1 1.0 14 ...``, or a real ``np.save`` 2-D array of the same
  fields as strings (what the upstream generator writes); field 0 + field 1 is the image
  path, field 3 the label. Rows are taken batch by batch in numeric order, then in
  metadata order; when numbered batches exist other ``.npy`` files (e.g. a ``combined.npy``
  of all rows) are ignored. ``n`` and ``seed`` do not apply: every listed image is used.
  Images that are empty files (0 bytes; the release has one,
  ``pathfinder32/curv_baseline/imgs/0/sample_172.png``) are skipped, as LRA does, and
  listed in meta.json; an image that decodes to all black is kept.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from tasks.base import SPLITS, Built, DataError, Progress, Task, register_task
from tasks.image import ordered_map
from tasks.text import _one_line

NPY_MAGIC = b"\x93NUMPY"
CHUNK = 2048  # images per worker task
POOL_MIN = 8192


def split_80_10_10(n: int) -> list[tuple[int, int]]:
    """(start, stop) of train, val, test for ``n`` rows in order."""
    n_train, n_val = n * 8 // 10, n // 10
    return [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n)]


def curv_names(contour_length: int) -> list[str]:
    names = [f"curv_contour_length_{contour_length}"]
    return ["curv_baseline", *names] if contour_length == 6 else names


def _batch_key(path: Path) -> tuple[int, int, str]:
    return (0, int(path.stem), "") if re.fullmatch(r"\d+", path.stem) else (1, 0, path.name)


def metadata_files(root: Path) -> list[Path]:
    files = sorted((root / "metadata").glob("*.npy"), key=_batch_key)
    numbered = [f for f in files if _batch_key(f)[0] == 0]
    return numbered or files


def read_metadata(path: Path) -> list[tuple[list[str], str]]:
    """Rows of one metadata file as (fields, location) where location is ``file:line``."""
    blob = path.read_bytes()
    if blob.startswith(NPY_MAGIC):
        try:
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
        except Exception as e:
            raise DataError(f"{path}: unreadable .npy array ({_one_line(e)})") from None
        if arr.ndim != 2 or arr.shape[1] < 4:
            raise DataError(f"{path}: metadata array has shape {arr.shape}, expected (rows, >= 4 fields)")
        return [([str(v) for v in row], f"{path}: row {i}") for i, row in enumerate(arr)]
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: neither an np.save array nor UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            raise DataError(f"{path}:{lineno}: expected at least 4 fields (dir, file, index, label), got {len(fields)}")
        rows.append((fields, f"{path}:{lineno}"))
    return rows


def parse_label(value: str, where: str) -> int:
    try:
        f = float(value)
    except ValueError:
        raise DataError(f"{where}: label {value!r} is not a number") from None
    if f not in (0.0, 1.0):
        raise DataError(f"{where}: label {value} is not 0 or 1")
    return int(f)


def _load_pngs(job: tuple[list[str], int]) -> tuple[np.ndarray, list[int], tuple[int, str] | None]:
    """Read and decode images -> (kept images, indexes of empty files, first error)."""
    from PIL import Image

    paths, size = job
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    empty, k = [], 0
    for i, p in enumerate(paths):
        try:
            blob = Path(p).read_bytes()
        except OSError as e:
            return out[:0], empty, (i, f"cannot read image ({_one_line(e)})")
        if not blob:
            empty.append(i)
            continue
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if im.size != (size, size):
                    return out[:0], empty, (i, f"image is {im.size[0]}x{im.size[1]}, expected {size}x{size} (resolution)")
                out[k] = np.asarray(im if im.mode == "L" else im.convert("L"))
        except Exception as e:  # PIL raises many types for bad data
            return out[:0], empty, (i, f"cannot decode image ({_one_line(e)})")
        k += 1
    return out[:k], empty, None


@register_task
class Pathfinder(Task):
    name = "pathfinder"
    num_classes = 2
    sources = ("generate",)
    default_params = {"resolution": 32, "contour_length": 14, "n": 200000, "seed": 0}
    how_to_get = (
        "Generate it (the default source `generate`; Path-X: data parameter resolution=128) "
        "or pass a release folder such as lra_release/pathfinder32/curv_contour_length_14 "
        "(imgs/ and metadata/) with `--source PATH`."
    )

    def seq_len(self, params: dict[str, Any]) -> int:
        return int(params["resolution"]) ** 2

    def apply_size(self, params: dict[str, Any]) -> None:
        params["n"] = min(params["n"], -(-params["size"] * 10 // 8))  # train = 80% of n

    def check_params(self, params: dict[str, Any]) -> None:
        if params["resolution"] < 8:
            raise DataError(f"pathfinder: resolution must be >= 8, got {params['resolution']}")
        if params["contour_length"] < 1:
            raise DataError(f"pathfinder: contour_length must be >= 1, got {params['contour_length']}")
        if params["n"] < 10:
            raise DataError(f"pathfinder: n must be >= 10 (every split needs a row), got {params['n']}")
        if params["seed"] < 0:
            raise DataError(f"pathfinder: seed must be >= 0, got {params['seed']}")

    def build(self, params: dict[str, Any], source: str, progress: Progress) -> Built:
        if source == "generate":
            x, y, info = self._generate(params, progress)
        else:
            x, y, info = self._read_release(Path(source).expanduser(), params, progress)
        if len(y) < 10:
            raise DataError(f"pathfinder: only {len(y)} images; every split needs at least one")
        x = x.reshape(len(x), -1)  # (N, res*res), row-major pixels
        splits = {name: (x[a:b], y[a:b]) for name, (a, b) in zip(SPLITS, split_80_10_10(len(y)))}
        return Built(splits=splits, vocab_size=256, info=info)

    def _generate(self, params: dict[str, Any], progress: Progress):
        try:
            from tasks import pathfinder_gen
        except ImportError as e:
            raise DataError(f"pathfinder: the generator tasks/pathfinder_gen.py cannot be imported ({_one_line(e)})") from None
        n, res = params["n"], params["resolution"]
        with progress.bar(n, "generate pathfinder", "img") as bar:
            x, y = pathfinder_gen.generate(
                n, params["seed"], size=res, contour_length=params["contour_length"], progress=bar.update
            )
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != (n, res, res) or x.dtype != np.uint8 or y.shape != (n,):
            raise DataError(
                f"pathfinder: generator returned images {x.dtype}{x.shape} and labels {y.shape}, "
                f"expected uint8 {(n, res, res)} and {(n,)}"
            )
        return x, y.astype(np.int64), {"kind": "generate", "generator": "tasks.pathfinder_gen"}

    def find_root(self, folder: Path, params: dict[str, Any]) -> Path:
        res = params["resolution"]
        candidates = [folder]
        for base in (folder, folder / f"pathfinder{res}", folder / "lra_release" / f"pathfinder{res}"):
            candidates += [base / c for c in curv_names(params["contour_length"])]
        for c in candidates:
            if (c / "metadata").is_dir():
                return c
        raise DataError(
            f"{folder}: no metadata/ folder here nor in {', '.join(str(c.relative_to(folder)) for c in candidates[1:])}. "
            f"{self.how_to_get}"
        )

    def _read_release(self, folder: Path, params: dict[str, Any], progress: Progress):
        root = self.find_root(folder, params)
        files = metadata_files(root)
        if not files:
            raise DataError(f"{root / 'metadata'}: no .npy metadata files")
        paths, labels, wheres = [], [], []
        for f in files:
            for fields, where in read_metadata(f):
                paths.append(str(root / fields[0] / fields[1]))
                labels.append(parse_label(fields[3], where))
                wheres.append(where)
        if not paths:
            raise DataError(f"{root / 'metadata'}: no rows")
        res = params["resolution"]
        chunks = [(paths[i : i + CHUNK], res) for i in range(0, len(paths), CHUNK)]
        # Filled in place: Path-X is 200k x 16384 bytes, no second copy of that.
        x = np.empty((len(paths), res, res), dtype=np.uint8)
        keep, filled = np.ones(len(paths), dtype=bool), 0
        workers = None if len(paths) >= POOL_MIN else 1
        with progress.bar(len(paths), f"read {root.parent.name}/{root.name}", "img") as bar:
            for k, (imgs, empty, err) in enumerate(ordered_map(_load_pngs, chunks, workers)):
                if err is not None:
                    i = k * CHUNK + err[0]
                    raise DataError(f"{paths[i]}: {err[1]} (listed at {wheres[i]})")
                keep[[k * CHUNK + e for e in empty]] = False
                x[filled : filled + len(imgs)] = imgs
                filled += len(imgs)
                bar.update(len(imgs) + len(empty))
        y = np.asarray(labels, dtype=np.int64)[keep]
        skipped = [os.path.relpath(p, root) for p, k in zip(paths, keep) if not k]
        info = {"kind": "release", "folder": str(root), "metadata_files": len(files),
                "images": filled, "skipped_empty": skipped}
        return x[:filled], y, info
