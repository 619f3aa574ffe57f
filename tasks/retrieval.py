"""Retrieval (LRA): ACL Anthology Network citation pairs, two documents, 2 classes.

Each row is two papers; the label says whether one cites the other. Both documents are
byte level like ``text`` (UTF-8 byte + 1, 0 = pad, vocab 257), each truncated or padded
to ``seq_len`` (4000 per document): x has shape (N, 2, seq_len).

Data: LRA's release ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` (147,086 / 18,090 /
17,437 rows; ``eval`` is our val). No header; five tab-separated columns
``label id1 id2 text1 text2``, the label a float string (``1.0``). Like LRA's reader there
is no quote handling: a line is split on tabs, so a row with the wrong number of
columns is an error, not something to repair. The bytes are taken as they are in the
file (no decode/encode round trip).

Sources: ``hub`` (HF dataset ``OpenNLPLab/lra``, files ``data/aan/new_aan_pairs.*.tsv``,
fetched with ``huggingface_hub.hf_hub_download``) or a local folder holding the three
files (directly, or under ``tsv_data/``, ``data/aan/``, or ``lra_release/tsv_data/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.base import Built, DataError, Progress, Task, register_task
from tasks.text import VOCAB_SIZE, _one_line, encode_texts

HUB_REPO = "OpenNLPLab/lra"
RELEASE_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
SUBFOLDERS = (".", "tsv_data", "data/aan", "lra_release/tsv_data")


def read_tsv(path: Path, seq_len: int, bar=None) -> tuple[list[bytes], list[bytes], np.ndarray]:
    """One release tsv -> first documents, second documents (bytes, cut to ``seq_len``), labels."""
    docs1, docs2, labels = [], [], []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if bar is not None:
                bar.update(len(line))
            line = line.rstrip(b"\n")
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue
            cols = line.split(b"\t")
            if len(cols) != 5:
                raise DataError(
                    f"{path}:{lineno}: expected 5 tab-separated columns (label id1 id2 text1 text2), got {len(cols)}"
                )
            try:
                value = float(cols[0])
            except ValueError:
                raw = cols[0][:40].decode("utf-8", "replace")
                raise DataError(f"{path}:{lineno}: label {raw!r} is not a number") from None
            if value not in (0.0, 1.0):
                raise DataError(f"{path}:{lineno}: label {value:g} is not 0 or 1")
            docs1.append(cols[3][:seq_len])
            docs2.append(cols[4][:seq_len])
            labels.append(int(value))
    return docs1, docs2, np.asarray(labels, dtype=np.int64)


def find_release(folder: Path) -> dict[str, Path] | None:
    for sub in SUBFOLDERS:
        d = folder / sub
        if all((d / f).is_file() for f in RELEASE_FILES.values()):
            return {s: d / f for s, f in RELEASE_FILES.items()}
    return None


@register_task
class Retrieval(Task):
    name = "retrieval"
    num_classes = 2
    num_docs = 2
    sources = ("hub",)
    # pad_to as Text's: the Skyformer code's create_retrieval.py cuts at 4,000 and pads to 4,096
    default_params = {"seq_len": 4000, "pad_to": 0}
    how_to_get = (
        f"Use `--source hub` (Hugging Face dataset `{HUB_REPO}`, files data/aan/new_aan_pairs.{{train,eval,test}}.tsv; "
        "needs the network once), or download those three files (or take tsv_data/ from LRA's lra_release.gz) "
        "into a folder and pass it with `--source PATH`."
    )

    def build(self, params: dict[str, Any], source: str, progress: Progress) -> Built:
        if source == "hub":
            files = self._download()
        else:
            folder = Path(source).expanduser()
            files = find_release(folder)
            if files is None:
                missing = [f for f in RELEASE_FILES.values() if not any((folder / s / f).is_file() for s in SUBFOLDERS)]
                what = f"no {', '.join(missing)}" if missing else "the three new_aan_pairs files are not in one folder"
                raise DataError(f"{folder}: {what} (looked in {', '.join(SUBFOLDERS)}). {self.how_to_get}")
        seq_len, width = params["seq_len"], self.seq_len(params)
        splits, truncated = {}, {}
        for name, path in files.items():
            with progress.bar(path.stat().st_size, f"read {path.name}", "B") as bar:
                docs1, docs2, y = read_tsv(path, seq_len, bar)
            if not len(y):
                raise DataError(f"{path}: no rows")
            x = np.zeros((len(y), 2, width), dtype=np.uint16)  # (N, docs, L), filled in place
            for d, docs in enumerate((docs1, docs2)):
                encode_texts(docs, seq_len, out=x[:, d, :seq_len])
            del docs1, docs2
            splits[name] = (x, y)
            truncated[name] = int((x[:, :, seq_len - 1] != 0).sum())  # documents filling the whole window
        info = {"kind": "hub" if source == "hub" else "tsv", "files": {s: str(p) for s, p in files.items()},
                "docs_at_full_length": truncated}
        return Built(splits=splits, vocab_size=VOCAB_SIZE, info=info)

    def _download(self) -> dict[str, Path]:
        files = {}
        for split, fname in RELEASE_FILES.items():
            try:
                from huggingface_hub import hf_hub_download

                files[split] = Path(hf_hub_download(HUB_REPO, f"data/aan/{fname}", repo_type="dataset"))
            except Exception as e:
                raise DataError(f"hub {HUB_REPO}: could not download data/aan/{fname} ({_one_line(e)}). {self.how_to_get}") from None
        return files
