"""Image (LRA): CIFAR-10 in grayscale, one token per pixel, 10 classes, length 1024.

Grayscale is LRA's ``tf.image.rgb_to_grayscale`` on the uint8 image, reproduced exactly
in float32 numpy (``rgb_to_grayscale`` below). TensorFlow converts uint8 to float with
``x * (1/255)``, takes ``0.2989 R + 0.5870 G + 0.1140 B`` and converts back with
``convert_image_dtype``: multiply by ``255 + 0.5`` and cast, which truncates. The weights
sum to 0.9999, so white stays 255 and a gray pixel r = g = b = v stays v.
LRA then casts to int32 and uses the value as the token: row-major 32 x 32 = 1024 tokens,
vocab 256, no padding. Under LRA's ``input > 0`` key mask (``mask_zero``, default on for
fidelity) a black pixel (0) is treated as padding; turn the option off to keep it.

Splits follow LRA's TFDS slices: train = ``train[:90%]`` (45,000), val = ``train[90%:]``
(5,000), test = test (10,000). TFDS stores CIFAR-10 train in a shuffled order, so LRA's
val is a random tenth. Sources do not all do that (the shared HF parquet is sorted by
label: its last tenth is all trucks), so the train rows are first permuted with
``split_seed`` (default 0; -1 keeps the source order). The subset therefore differs from
TFDS's, the recipe does not.

Sources: ``hub`` (``datasets.load_dataset("uoft-cs/cifar10")``, fields ``img``, ``label``);
a folder of HF parquet (``train.parquet``/``test.parquet`` or ``plain_text/*-*.parquet``,
``img`` a ``{bytes, path}`` struct of encoded images); the python release
``cifar-10-batches-py/`` (pickles ``data_batch_1..5``, ``test_batch``: ``b'data'`` (N, 3072)
uint8 in CHW order, ``b'labels'``). Unpickling runs code from the file: only point this at
a release you trust.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tasks.base import Built, DataError, Progress, Task, register_task
from tasks.text import _one_line, find_parquet, labels_from, read_parquet

HUB_ID = "uoft-cs/cifar10"
SIZE = 32
RGB_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale
PICKLE_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
PICKLE_TEST = "test_batch"
CHUNK = 1024  # images per worker task
POOL_MIN = 4096  # below this many images a pool costs more than it saves


def rgb_to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) uint8, the arithmetic of TensorFlow's rgb_to_grayscale on uint8."""
    f = rgb.astype(np.float32) * np.float32(1.0 / 255)
    w = [np.float32(v) for v in RGB_WEIGHTS]
    gray = f[..., 0] * w[0] + f[..., 1] * w[1] + f[..., 2] * w[2]
    return (gray * np.float32(255.5)).astype(np.uint8)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ordered_map(fn: Callable, chunks: list, workers: int | None = None) -> Iterator:
    """``fn`` over ``chunks`` in order, in a process pool when there is more than one chunk."""
    workers = min(usable_cpus(), 8, len(chunks)) if workers is None else workers
    if workers <= 1:
        yield from map(fn, chunks)
        return
    with multiprocessing.get_context().Pool(workers) as pool:
        yield from pool.imap(fn, chunks)


def _decode_gray(blobs: list[bytes]) -> tuple[np.ndarray, tuple[int, str] | None]:
    """Encoded 32x32 colour images -> (n, 32, 32) grayscale; stops at the first bad one."""
    from PIL import Image

    rgb = np.empty((len(blobs), SIZE, SIZE, 3), dtype=np.uint8)
    for i, blob in enumerate(blobs):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if im.size != (SIZE, SIZE):
                    return rgb[:0, ..., 0], (i, f"image is {im.size[0]}x{im.size[1]}, expected {SIZE}x{SIZE}")
                rgb[i] = np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises many types for bad data
            return rgb[:0, ..., 0], (i, f"cannot decode image ({_one_line(e)})")
    return rgb_to_grayscale(rgb), None


def decode_images(blobs: list[bytes], where: str, bar) -> np.ndarray:
    chunks = [blobs[i : i + CHUNK] for i in range(0, len(blobs), CHUNK)]
    parts = []
    workers = None if len(blobs) >= POOL_MIN else 1
    for k, (gray, err) in enumerate(ordered_map(_decode_gray, chunks, workers)):
        if err is not None:
            raise DataError(f"{where}: row {k * CHUNK + err[0]}: {err[1]}")
        parts.append(gray)
        bar.update(len(gray))
    return np.concatenate(parts) if parts else np.zeros((0, SIZE, SIZE), np.uint8)


def image_blobs(table, where: str) -> list[bytes]:
    """The encoded bytes of an HF ``Image`` column (struct of bytes and path)."""
    import pyarrow as pa

    col = table.column("img" if "img" in table.column_names else "image").combine_chunks()
    if pa.types.is_struct(col.type) and col.type.get_field_index("bytes") >= 0:
        blobs = col.field("bytes").to_pylist()
        paths = col.field("path").to_pylist() if col.type.get_field_index("path") >= 0 else [None] * len(col)
    elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        blobs, paths = col.to_pylist(), [None] * len(col)
    else:
        raise DataError(f"{where}: image column has type {col.type}, expected a {{bytes, path}} struct")
    for i, blob in enumerate(blobs):
        if blob is None:
            # An HF Image may hold only a path; read it if it is there.
            if paths[i] and Path(paths[i]).is_file():
                blobs[i] = Path(paths[i]).read_bytes()
            else:
                raise DataError(f"{where}: row {i} has no image bytes (path {paths[i]!r} not found)")
    return blobs


def _read_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-release batch -> (N, 32, 32, 3) uint8 RGB, (N,) labels."""
    if not path.is_file():
        raise DataError(f"{path}: missing (cifar-10-batches-py needs {', '.join(PICKLE_TRAIN)} and {PICKLE_TEST})")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({_one_line(e)})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path}: expected a dict with b'data' and b'labels', got {keys}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE:
        raise DataError(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: b'labels' has {labels.shape} {labels.dtype}, expected {len(data)} integers")
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if len(bad):
        raise DataError(f"{path}: row {int(bad[0])} has label {int(labels[bad[0]])}, outside 0..9")
    rgb = data.reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)  # CHW -> HWC
    return rgb, labels.astype(np.int64)


def _pickle_root(folder: Path) -> Path | None:
    for root in (folder, folder / "cifar-10-batches-py"):
        if (root / PICKLE_TEST).exists() or (root / PICKLE_TRAIN[0]).exists():
            return root
    return None


@register_task
class ImageTask(Task):
    name = "image"
    num_classes = 10
    sources = ("hub",)
    default_params = {"split_seed": 0}
    how_to_get = (
        f"Use `--source hub` (Hugging Face `{HUB_ID}`, needs the network once), or pass a folder with "
        "train.parquet/test.parquet in the HF layout (column img, label), or the python release "
        "cifar-10-batches-py/ from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, with `--source PATH`."
    )

    def seq_len(self, params: dict[str, Any]) -> int:
        return SIZE * SIZE

    def check_params(self, params: dict[str, Any]) -> None:
        if params["split_seed"] < -1:
            raise DataError("image: split_seed must be >= 0, or -1 to keep the source order")

    def build(self, params: dict[str, Any], source: str, progress: Progress) -> Built:
        if source == "hub":
            gray, labels, info = self._from_hub(progress)
        else:
            folder = Path(source).expanduser()
            root = _pickle_root(folder)
            if root is not None:
                gray, labels, info = self._from_pickles(root, progress)
            else:
                gray, labels, info = self._from_parquet(folder, progress)
        tr_x, tr_y = gray["train"], labels["train"]
        if params["split_seed"] >= 0:
            order = np.random.default_rng(params["split_seed"]).permutation(len(tr_y))
            tr_x, tr_y = tr_x[order], tr_y[order]
        cut = len(tr_y) * 9 // 10
        te_x = gray["test"]
        splits = {  # (N, 32, 32) -> (N, 1024), row-major pixels
            "train": (tr_x[:cut].reshape(-1, SIZE * SIZE), tr_y[:cut]),
            "val": (tr_x[cut:].reshape(-1, SIZE * SIZE), tr_y[cut:]),
            "test": (te_x.reshape(-1, SIZE * SIZE), labels["test"]),
        }
        info["grayscale"] = "tf.image.rgb_to_grayscale on uint8 (weights 0.2989, 0.5870, 0.1140; x255.5, truncate)"
        return Built(splits=splits, vocab_size=256, info=info)

    def _from_hub(self, progress: Progress):
        try:
            import datasets

            dd = datasets.load_dataset(HUB_ID)
            tables = {s: dd[s].with_format("arrow")[:] for s in ("train", "test")}
        except Exception as e:
            raise DataError(f"hub {HUB_ID}: could not load ({_one_line(e)}). {self.how_to_get}") from None
        gray, labels = {}, {}
        for s, table in tables.items():
            gray[s], labels[s] = self._decode_table(table, f"hub {HUB_ID} split {s}", progress)
        return gray, labels, {"kind": "hub", "dataset": HUB_ID}

    def _from_parquet(self, folder: Path, progress: Progress):
        import pyarrow.parquet as pq

        gray, labels, files = {}, {}, {}
        for s in ("train", "test"):
            found = find_parquet(folder, s)
            if not found:
                raise DataError(
                    f"{folder}: no {s}.parquet (nor plain_text/{s}-*.parquet) and no cifar-10-batches-py pickles. "
                    f"{self.how_to_get}"
                )
            try:
                names = pq.read_schema(found[0]).names
            except Exception as e:  # pyarrow raises several types for a corrupt file
                raise DataError(f"{found[0]}: not a readable parquet file ({_one_line(e)})") from None
            image_col = "image" if "img" not in names and "image" in names else "img"
            table = read_parquet(found, (image_col, "label"))
            where = str(found[0]) if len(found) == 1 else f"{found[0].parent}/{s}-*.parquet"
            if table.num_rows == 0:
                raise DataError(f"{where}: no rows")
            gray[s], labels[s] = self._decode_table(table, where, progress)
            files[s] = [str(f) for f in found]
        return gray, labels, {"kind": "parquet", "files": files}

    def _decode_table(self, table, where: str, progress: Progress):
        labels = labels_from(table.column("label"), where, self.num_classes)
        blobs = image_blobs(table, where)
        with progress.bar(len(blobs), f"decode {Path(where).name}", "img") as bar:
            gray = decode_images(blobs, where, bar)
        return gray, labels

    def _from_pickles(self, root: Path, progress: Progress):
        gray, labels = {}, {}
        for s, names in (("train", PICKLE_TRAIN), ("test", (PICKLE_TEST,))):
            parts = [_read_pickle(root / n) for n in names]
            with progress.bar(sum(len(y) for _, y in parts), f"grayscale {s}", "img") as bar:
                out = []
                for rgb, y in parts:
                    out.append(rgb_to_grayscale(rgb))
                    bar.update(len(y))
            gray[s] = np.concatenate(out)
            labels[s] = np.concatenate([y for _, y in parts])
        return gray, labels, {"kind": "cifar-10-batches-py", "folder": str(root)}
