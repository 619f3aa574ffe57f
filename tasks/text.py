"""Text (LRA): IMDB movie reviews, byte level, 2 classes, length 4000.

Tokens are the review's UTF-8 bytes, id = byte + 1, 0 = pad (vocab 257), truncated or
right-padded to ``seq_len``. LRA's config uses 1000; the PyTorch ports (Skyformer,
xformers) and the paper's speed table use 4000, our default.

Splits follow LRA: train = IMDB train (25,000); LRA has no validation split and uses
the test set for it, so val and test both hold IMDB test (25,000 each, stored twice).

Sources:
- ``hub``: ``datasets.load_dataset("stanfordnlp/imdb")`` (needs the network once; the
  ``unsupervised`` split is not used);
- a local folder with the Hugging Face parquet files: ``train.parquet``/``test.parquet``,
  or the hub repository's ``plain_text/train-*.parquet`` (``data/`` also accepted);
- the original release ``aclImdb/`` (``train|test/pos|neg/*.txt``, pos = 1, neg = 0; rows
  in label order, then by review id, like the hub's).

Byte conversion never loops over bytes in Python: parquet strings are read straight from
the Arrow buffers (offsets + UTF-8 data), files are joined into one buffer, and ids are
scattered into the padded array with numpy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from tasks.base import Built, DataError, Progress, Task, register_task

VOCAB_SIZE = 257  # 256 byte values + pad
HUB_ID = "stanfordnlp/imdb"
_ROWS_PER_BLOCK = 2048  # bounds the temporary index arrays of the scatter


def encode_bytes(data: np.ndarray, offsets: np.ndarray, seq_len: int, progress=None,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``data[offsets[i]:offsets[i+1]]`` as ids byte + 1, truncated/0-padded: (N, seq_len) uint16.

    ``out``: a zeroed (N, seq_len) array (or view) to fill instead of a new one.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    out = np.zeros((n, seq_len), dtype=np.uint16) if out is None else out
    cols = np.arange(seq_len)
    for lo in range(0, n, _ROWS_PER_BLOCK):
        hi = min(lo + _ROWS_PER_BLOCK, n)
        starts = offsets[lo:hi]
        lens = np.minimum(offsets[lo + 1 : hi + 1] - starts, seq_len)
        keep = cols < lens[:, None]  # (rows, L) True where a byte lands
        # Source index of every kept byte, in row-major order of ``keep``.
        first = np.cumsum(lens) - lens
        src = np.arange(int(lens.sum())) + np.repeat(starts - first, lens)
        out[lo:hi][keep] = data[src].astype(np.uint16) + 1
        if progress is not None:
            progress(hi - lo)
    return out


def encode_texts(texts: list[bytes], seq_len: int, progress=None, out: np.ndarray | None = None) -> np.ndarray:
    """Byte strings -> (N, seq_len) uint16 ids (byte + 1, 0 = pad); ``out`` as in ``encode_bytes``."""
    texts = [t[:seq_len] for t in texts]  # only what is kept gets joined
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    data = np.frombuffer(b"".join(texts), dtype=np.uint8)
    return encode_bytes(data, offsets, seq_len, progress, out)


def arrow_strings(column, where: str) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow string column as (UTF-8 data bytes, int64 offsets) without copying per row."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            or pa.types.is_string_view(column.type)):
        raise DataError(f"{where}: text column has type {column.type}, expected string")
    if column.null_count:
        raise DataError(f"{where}: {column.null_count} rows have no text (null)")
    column = column.cast(pa.large_string())  # one layout: int64 offsets
    _, off_buf, data_buf = column.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[column.offset : column.offset + len(column) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


def labels_from(column, where: str, num_classes: int) -> np.ndarray:
    import pyarrow as pa

    if not (pa.types.is_integer(column.type)):
        raise DataError(f"{where}: label column has type {column.type}, expected integers")
    if column.null_count:
        raise DataError(f"{where}: {column.null_count} rows have no label (null)")
    y = column.to_numpy().astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if len(bad):
        raise DataError(f"{where}: row {int(bad[0])} has label {int(y[bad[0]])}, outside 0..{num_classes - 1}")
    return y


def find_parquet(folder: Path, split: str) -> list[Path]:
    """Parquet files of one split in the Hugging Face layouts: ``<split>.parquet``,
    ``<split>-*.parquet`` (sharded), directly or under ``plain_text/`` or ``data/``."""
    for sub in (folder, folder / "plain_text", folder / "data"):
        files = sorted(sub.glob(f"{split}.parquet")) + sorted(sub.glob(f"{split}-*.parquet"))
        if files:
            return files
    return []


def read_parquet(files: list[Path], columns: tuple[str, ...], where: str | None = None):
    """Concatenate parquet files into one Arrow table of ``columns``; errors name the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{f}: not a readable parquet file ({_one_line(e)})") from None
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataError(f"{f}: no column {missing[0]!r} (has {', '.join(schema.names)})")
        tables.append(pq.read_table(f, columns=list(columns)))
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as e:
        raise DataError(f"{where or files[0].parent}: parquet shards disagree ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def _natural_key(path: Path) -> tuple[int, str]:
    m = re.match(r"(\d+)", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def _acl_root(folder: Path) -> Path | None:
    for root in (folder, folder / "aclImdb"):
        if (root / "train" / "pos").is_dir():
            return root
    return None


@register_task
class Text(Task):
    name = "text"
    num_classes = 2
    sources = ("hub",)
    # pad_to: rows are cut at seq_len and then zero-padded to pad_to tokens (0 = seq_len), as the
    # Skyformer code's create_text.py cuts IMDB at 4,000 bytes and pads to 4,096
    default_params = {"seq_len": 4000, "pad_to": 0}
    how_to_get = (
        f"Use `--source hub` (Hugging Face `{HUB_ID}`, needs the network once), or pass a folder "
        "with train.parquet/test.parquet (or the hub's plain_text/*-*.parquet), or the original "
        "aclImdb/ from https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz, "
        "with `--source PATH`."
    )

    def build(self, params: dict[str, Any], source: str, progress: Progress) -> Built:
        seq_len, width = params["seq_len"], self.seq_len(params)
        if source == "hub":
            raw, info = self._from_hub()
        else:
            raw, info = self._from_folder(Path(source).expanduser())
        splits, truncated = {}, {}
        for name, (data, offsets, y) in raw.items():
            x = np.zeros((len(y), width), dtype=np.uint16)
            with progress.bar(len(y), f"encode text {name}", "rows") as bar:
                encode_bytes(data, offsets, seq_len, bar.update, out=x[:, :seq_len])
            splits[name] = (x, y)
            truncated[name] = int((np.diff(offsets) > seq_len).sum())
        # LRA evaluates on the test set and also selects checkpoints on it.
        splits = {"train": splits["train"], "val": splits["test"], "test": splits["test"]}
        info.update({"val_is_test": True, "rows_truncated": {"train": truncated["train"], "test": truncated["test"]}})
        return Built(splits=splits, vocab_size=VOCAB_SIZE, info=info)

    def _from_hub(self):
        try:
            import datasets

            dd = datasets.load_dataset(HUB_ID)
            tables = {s: dd[s].with_format("arrow")[:] for s in ("train", "test")}
        except Exception as e:
            raise DataError(f"hub {HUB_ID}: could not load ({_one_line(e)}). {self.how_to_get}") from None
        raw = {}
        for s, table in tables.items():
            where = f"hub {HUB_ID} split {s}"
            for col in ("text", "label"):
                if col not in table.column_names:
                    raise DataError(f"{where}: no column {col!r} (has {', '.join(table.column_names)})")
            raw[s] = (*arrow_strings(table.column("text"), where), labels_from(table.column("label"), where, 2))
        return raw, {"kind": "hub", "dataset": HUB_ID}

    def _from_folder(self, folder: Path):
        acl = _acl_root(folder)
        if acl is not None:
            return self._from_acl(acl)
        raw, files = {}, {}
        for s in ("train", "test"):
            found = find_parquet(folder, s)
            if not found:
                raise DataError(
                    f"{folder}: no {s}.parquet (nor plain_text/{s}-*.parquet) and no aclImdb/{s}/pos. {self.how_to_get}"
                )
            table = read_parquet(found, ("text", "label"))
            where = str(found[0]) if len(found) == 1 else f"{found[0].parent}/{s}-*.parquet"
            if table.num_rows == 0:
                raise DataError(f"{where}: no rows")
            raw[s] = (*arrow_strings(table.column("text"), where), labels_from(table.column("label"), where, 2))
            files[s] = [str(f) for f in found]
        return raw, {"kind": "parquet", "files": files}

    def _from_acl(self, root: Path):
        raw = {}
        for s in ("train", "test"):
            texts, labels = [], []
            for label, sub in ((0, "neg"), (1, "pos")):
                d = root / s / sub
                if not d.is_dir():
                    raise DataError(f"{d}: missing (aclImdb layout needs {s}/neg and {s}/pos). {self.how_to_get}")
                files = sorted(d.glob("*.txt"), key=_natural_key)
                if not files:
                    raise DataError(f"{d}: no .txt reviews")
                texts += [f.read_bytes() for f in files]
                labels += [label] * len(files)
            lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
            offsets = np.zeros(len(texts) + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
            raw[s] = (np.frombuffer(b"".join(texts), dtype=np.uint8), offsets, np.asarray(labels, dtype=np.int64))
        return raw, {"kind": "aclImdb", "folder": str(root)}
