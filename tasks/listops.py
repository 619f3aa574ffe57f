"""ListOps (LRA): nested MIN/MAX/MED/SM expressions, 10 classes, length 2000.

Sources: ``generate`` (our generator, ``tasks/listops_gen.py``, the LRA distribution of
LRA_SPEC §1.1) or a folder holding the release's ``basic_{train,val,test}.tsv``.
Tokenisation is LRA's since 2021-06-10: drop ``(`` and ``)``, ``]`` becomes ``X``,
split on whitespace; defined as a ``tokenizers`` WordLevel model saved as ``vocab.json``.
That tokenizer spends ~3 ms per 1,000-token row on its alignment bookkeeping (minutes for
the 100k rows of the full task), so bulk encoding uses ``fast_encode``: the same mapping
done on the byte array with numpy, tested token for token against the tokenizer; a row it
cannot map exactly goes through the tokenizer, which names the unknown token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from tasks.base import SPLITS, Built, DataError, Progress, Task, pad_rows, register_task, token_dtype

PAD, UNK = "[PAD]", "[UNK]"
TOKENS = [PAD, UNK, *map(str, range(10)), "[MIN", "[MAX", "[MED", "[SM", "X"]
RELEASE_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}


def make_tokenizer() -> Tokenizer:
    tok = Tokenizer(WordLevel({t: i for i, t in enumerate(TOKENS)}, unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace("(", ""), normalizers.Replace(")", ""), normalizers.Replace("]", "X")]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


_DROP = str.maketrans({"(": "", ")": "", "]": "X"})
_WS = np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8)


def _templates() -> tuple[np.ndarray, np.ndarray]:
    """Byte templates (V, 4) and lengths (V,) of the vocabulary's real tokens."""
    width = max(len(t) for t in TOKENS[2:])
    tmpl = np.zeros((len(TOKENS), width), dtype=np.uint8)
    lens = np.zeros(len(TOKENS), dtype=np.int64)
    for i, t in enumerate(TOKENS[2:], start=2):
        tmpl[i, : len(t)] = np.frombuffer(t.encode(), dtype=np.uint8)
        lens[i] = len(t)
    return tmpl, lens


def fast_encode(sources: list[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised LRA tokenisation: ids (N, seq_len) and a (N,) bool of rows mapped exactly.

    A token is identified by its first byte (a digit, ``X``) or, after ``[``, by its
    second and third; it is then checked byte for byte against the vocabulary, so any
    other token (or a non-ASCII row) leaves its row unmapped for the slow path.
    """
    n = len(sources)
    ids_out = np.zeros((n, seq_len), dtype=token_dtype(len(TOKENS)))
    ok = np.ones(n, dtype=bool)
    text = "\n".join(sources).translate(_DROP).encode("utf-8", "replace")
    b = np.frombuffer(text, dtype=np.uint8)
    if not len(b):
        return ids_out, ok
    space = np.isin(b, _WS)
    prev_space = np.concatenate([[True], space[:-1]])
    next_space = np.concatenate([space[1:], [True]])
    starts = np.flatnonzero(~space & prev_space)  # (T,) first byte of each token
    ends = np.flatnonzero(~space & next_space) + 1
    lengths = ends - starts
    newlines = np.flatnonzero(b == 10)
    row = np.searchsorted(newlines, starts)  # (T,) row of each token
    pad = np.concatenate([b, np.zeros(4, dtype=np.uint8)])
    c0, c1, c2 = pad[starts], pad[starts + 1], pad[starts + 2]
    tid = np.full(len(starts), -1, dtype=np.int64)
    digit = (c0 >= 48) & (c0 <= 57)
    tid[digit] = c0[digit] - 48 + TOKENS.index("0")
    tid[c0 == ord("X")] = TOKENS.index("X")
    bracket = c0 == ord("[")
    tid[bracket & (c1 == ord("S"))] = TOKENS.index("[SM")
    for third, name in ((ord("I"), "[MIN"), (ord("A"), "[MAX"), (ord("E"), "[MED")):
        tid[bracket & (c1 == ord("M")) & (c2 == third)] = TOKENS.index(name)
    tmpl, lens = _templates()
    good = (tid >= 0) & (lens[np.maximum(tid, 0)] == lengths)
    for k in range(tmpl.shape[1]):  # byte-for-byte check of every position inside the token
        inside = good & (k < lengths)
        good[inside] &= pad[starts[inside] + k] == tmpl[tid[inside], k]
    ok[np.unique(row[~good])] = False
    first_of_row = np.searchsorted(row, np.arange(n))  # index of each row's first token
    pos = np.arange(len(starts)) - first_of_row[row]  # (T,) position inside its row
    keep = good & ok[row] & (pos < seq_len)
    ids_out[row[keep], pos[keep]] = tid[keep]
    return ids_out, ok


def encode(sources: list[str], seq_len: int, where: list[str] | None = None) -> np.ndarray:
    """Token ids (N, seq_len), 0-padded; an unknown token fails naming its row."""
    ids, ok = fast_encode(sources, seq_len)
    if ok.all():
        return ids
    tok = make_tokenizer()
    unk = TOKENS.index(UNK)
    slow = np.flatnonzero(~ok)
    for i, enc in zip(slow, tok.encode_batch([sources[i] for i in slow])):
        if unk in enc.ids:
            bad = tok.normalizer.normalize_str(sources[i]).split()[enc.ids.index(unk)]
            at = where[i] if where else f"row {i}"
            raise DataError(f"{at}: unknown ListOps token {bad!r}")
        ids[i] = pad_rows([enc.ids], seq_len, ids.dtype)[0]
    return ids


def read_tsv(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Read a release tsv (header ``Source\\tTarget``); returns sources, labels, row locations."""
    sources, labels, where = [], [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["Source", "Target"]:
            raise DataError(f"{path}:1: expected header 'Source<TAB>Target', got {header!r}")
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) != 2:
                raise DataError(f"{path}:{lineno}: expected 2 tab-separated columns, got {len(cols)}")
            try:
                label = int(cols[1])
            except ValueError:
                raise DataError(f"{path}:{lineno}: target {cols[1]!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise DataError(f"{path}:{lineno}: target {label} is outside 0..9")
            sources.append(cols[0])
            labels.append(label)
            where.append(f"{path}:{lineno}")
    return sources, np.asarray(labels, dtype=np.int64), where


@register_task
class ListOps(Task):
    name = "listops"
    num_classes = 10
    sources = ("generate",)
    default_params = {
        "seq_len": 2000,
        "min_length": 500,
        "max_length": 2000,
        "max_depth": 10,
        "max_args": 10,
        "n_train": 96000,
        "n_val": 2000,
        "n_test": 2000,
        "seed": 0,
    }
    how_to_get = (
        "Generate it (`lra data prepare listops`, the default source) or pass the LRA release "
        "folder `listops-1000/` holding basic_{train,val,test}.tsv with `--source PATH`."
    )

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)
        if not 0 <= params["min_length"] < params["max_length"] - 1:
            raise DataError(f"listops: need 0 <= min_length < max_length - 1, got {params['min_length']}, {params['max_length']}")
        if params["max_args"] < 2 or params["max_depth"] < 2:
            raise DataError("listops: need max_args >= 2 and max_depth >= 2 (depth 1 is a bare value)")
        if min(params["n_train"], params["n_val"], params["n_test"]) < 1:
            raise DataError("listops: every split needs at least one row")

    def apply_size(self, params: dict[str, Any]) -> None:
        for key in ("n_train", "n_val", "n_test"):
            params[key] = min(params[key], params["size"])

    def build(self, params: dict[str, Any], source: str, progress: Progress) -> Built:
        if source == "generate":
            splits, info = self._generate(params, progress)
        else:
            splits, info = self._read_release(Path(source).expanduser(), params)
        vocab = make_tokenizer().to_str()
        return Built(splits=splits, vocab_size=len(TOKENS), files={"vocab.json": vocab}, info=info)

    def _generate(self, params: dict[str, Any], progress: Progress):
        from tasks import listops_gen

        if params["max_length"] - 1 > params["seq_len"]:
            # Generated rows have fewer than max_length tokens; longer ones would be truncated.
            raise DataError(f"listops: max_length {params['max_length']} exceeds seq_len {params['seq_len']} + 1")
        counts = [params["n_train"], params["n_val"], params["n_test"]]
        with progress.bar(sum(counts), "generate listops", "rows") as bar:
            rows = listops_gen.generate(
                sum(counts),
                params["seed"],
                min_length=params["min_length"],
                max_length=params["max_length"],
                max_depth=params["max_depth"],
                max_args=params["max_args"],
                progress=bar.update,
            )
        splits, start = {}, 0
        for name, n in zip(SPLITS, counts):
            part = rows[start : start + n]
            start += n
            x = encode([s for s, _ in part], params["seq_len"])
            splits[name] = (x, np.asarray([lab for _, lab in part], dtype=np.int64))
        return splits, {"generator": "tasks.listops_gen", "unique_rows": len(rows)}

    def _read_release(self, folder: Path, params: dict[str, Any]):
        splits = {}
        for name, fname in RELEASE_FILES.items():
            path = folder / fname
            if not path.exists():
                raise DataError(f"{path}: missing. {self.how_to_get}")
            sources, labels, where = read_tsv(path)
            if not sources:
                raise DataError(f"{path}: no rows")
            splits[name] = (encode(sources, params["seq_len"], where), labels)
        return splits, {"release_folder": str(folder)}
