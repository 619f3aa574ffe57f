"""Text task (IMDB, byte level): every source layout, tokenisation, splits, bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.base import DataError
from tasks.cache import open_prepared, prepare
from tasks.text import encode_texts

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REVIEWS = {  # split -> [(text, label)], in the order every layout stores them (neg first)
    "train": [("Bad film.", 0), ("Naïve <br />plot", 0), ("Great!", 1), ("A very long review " * 3, 1)],
    "test": [("Dull", 0), ("Loved it — 10/10", 1), ("", 1)],
}


def ids(text: str, seq_len: int) -> np.ndarray:
    """Reference tokenisation written out: UTF-8 bytes + 1, cut, 0-padded."""
    b = list(text.encode("utf-8"))[:seq_len]
    return np.array([v + 1 for v in b] + [0] * (seq_len - len(b)), dtype=np.uint16)


def write_acl(root: Path) -> Path:
    for split, rows in REVIEWS.items():
        for i, (text, label) in enumerate(rows):
            d = root / "aclImdb" / split / ("pos" if label else "neg")
            d.mkdir(parents=True, exist_ok=True)
            # ids 10 and 9: the natural sort must put 9 first, as the hub does
            (d / f"{10 - i}_{7 if label else 2}.txt").write_bytes(text.encode("utf-8"))
    return root


def acl_order(split: str) -> list[tuple[str, int]]:
    rows = REVIEWS[split]
    out = []
    for label in (0, 1):
        mine = [(10 - i, r) for i, r in enumerate(rows) if r[1] == label]
        out += [r for _, r in sorted(mine)]
    return out


def write_parquet(path: Path, rows: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"text": [t for t, _ in rows], "label": pa.array([lab for _, lab in rows], pa.int64())})
    pq.write_table(table, path)


def assert_fails(tmp_path: Path, source: Path | str, pattern: str, params=None) -> str:
    root = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        prepare("text", params or {"seq_len": 32}, source=str(source), root=root)
    msg = str(err.value)
    assert "\n" not in msg
    assert re.search(pattern, msg), msg
    assert not root.exists() or list(root.iterdir()) == []  # nothing half-prepared left behind
    return msg


def test_encode_texts_is_bytes_plus_one_cut_and_padded():
    x = encode_texts(["hé".encode(), b"", bytes(range(256))], 4)
    assert x.dtype == np.uint16 and x.shape == (3, 4)
    assert x[0].tolist() == [ord("h") + 1, 0xC3 + 1, 0xA9 + 1, 0]
    assert x[1].tolist() == [0, 0, 0, 0]
    assert x[2].tolist() == [1, 2, 3, 4]
    assert encode_texts([bytes([255])], 1)[0, 0] == 256  # top id = vocab 257 - 1


def test_acl_imdb_layout(tmp_path):
    path = prepare("text", {"seq_len": 32}, source=str(write_acl(tmp_path / "src")), root=tmp_path / "c")
    p = open_prepared(path)
    assert p.vocab_size == 257 and p.seq_len == 32 and p.meta["num_docs"] == 1
    for split, src in (("train", "train"), ("val", "test"), ("test", "test")):
        x, y = p.split(split)
        rows = acl_order(src)
        assert x.shape == (len(rows), 32) and x.dtype == np.uint16
        assert y.tolist() == [lab for _, lab in rows]
        for got, (text, _) in zip(x, rows):
            np.testing.assert_array_equal(got, ids(text, 32))
    assert p.meta["info"]["kind"] == "aclImdb" and p.meta["info"]["val_is_test"] is True
    assert p.meta["info"]["rows_truncated"]["train"] == 1  # the 57-byte review


def test_pad_to_cuts_at_seq_len_then_pads(tmp_path):
    """``pad_to`` (the Skyformer code's Text: cut at 4,000 bytes, padded to 4,096): rows are the
    ``seq_len`` tokenisation followed by zeros up to ``pad_to``."""
    src = str(write_acl(tmp_path / "src"))
    p = open_prepared(prepare("text", {"seq_len": 16, "pad_to": 24}, source=src, root=tmp_path / "c"))
    assert p.seq_len == 24
    for split, rows in (("train", acl_order("train")), ("test", acl_order("test"))):
        x, _ = p.split(split)
        assert x.shape == (len(rows), 24)
        for got, (text, _) in zip(x, rows):
            np.testing.assert_array_equal(got, np.concatenate([ids(text, 16), np.zeros(8, np.uint16)]))
    assert p.meta["info"]["rows_truncated"]["train"] == 2  # cut at 16, not at 24
    assert_fails(tmp_path, src, r"task text: pad_to must be 0 or at least seq_len \(16\), got 8",
                 {"seq_len": 16, "pad_to": 8})


def test_every_layout_gives_the_same_arrays(tmp_path, monkeypatch):
    """aclImdb, root parquet, the hub's sharded plain_text/ layout and the hub itself agree."""
    acl = write_acl(tmp_path / "acl")
    flat, sharded = tmp_path / "flat", tmp_path / "sharded"
    for split in ("train", "test"):
        rows = acl_order(split)
        write_parquet(flat / f"{split}.parquet", rows)
        write_parquet(sharded / "plain_text" / f"{split}-00000-of-00002.parquet", rows[:2])
        write_parquet(sharded / "plain_text" / f"{split}-00001-of-00002.parquet", rows[2:])
    write_parquet(sharded / "plain_text" / "unsupervised-00000-of-00001.parquet", [("x", 0)])

    import datasets

    def fake_load_dataset(name, *args, **kwargs):
        assert name == "stanfordnlp/imdb"
        return datasets.DatasetDict({
            s: datasets.Dataset.from_dict({"text": [t for t, _ in acl_order(s)], "label": [lab for _, lab in acl_order(s)]})
            for s in ("train", "test")
        })

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hashes = set()
    for source in (acl, flat, sharded, "hub"):
        meta = json.loads((prepare("text", {"seq_len": 24}, source=str(source), root=tmp_path / "c") / "meta.json").read_text())
        assert meta["counts"] == {"train": 4, "val": 3, "test": 3}
        hashes.add(meta["content_sha256"])
    assert len(hashes) == 1


def test_hub_offline_says_how_to_get_the_data(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'stanfordnlp/imdb' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    msg = assert_fails(tmp_path, "hub", r"hub stanfordnlp/imdb: could not load \(ConnectionError")
    assert "aclImdb" in msg and "--source PATH" in msg


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("no_label_column", r"train\.parquet: no column 'label' \(has text\)"),
        ("label_out_of_range", r"test\.parquet: row 1 has label 2, outside 0\.\.1"),
        ("null_text", r"train\.parquet: 1 rows have no text \(null\)"),
        ("not_parquet", r"train\.parquet: not a readable parquet file"),
        ("no_test_split", r"src: no test\.parquet"),
        ("empty_split", r"test\.parquet: no rows"),
    ],
)
def test_malformed_parquet(tmp_path, case, pattern):
    src = tmp_path / "src"
    write_parquet(src / "train.parquet", REVIEWS["train"])
    write_parquet(src / "test.parquet", REVIEWS["test"])
    if case == "no_label_column":
        pq.write_table(pa.table({"text": ["a"]}), src / "train.parquet")
    elif case == "label_out_of_range":
        write_parquet(src / "test.parquet", [("a", 0), ("b", 2)])
    elif case == "null_text":
        pq.write_table(pa.table({"text": ["a", None], "label": [0, 1]}), src / "train.parquet")
    elif case == "not_parquet":
        (src / "train.parquet").write_bytes(b"this is not parquet")
    elif case == "no_test_split":
        (src / "test.parquet").unlink()
    elif case == "empty_split":
        write_parquet(src / "test.parquet", [])
    msg = assert_fails(tmp_path, src, pattern)
    assert str(src) in msg


def test_malformed_acl_imdb(tmp_path):
    src = write_acl(tmp_path / "src")
    for f in (src / "aclImdb" / "test" / "neg").iterdir():
        f.unlink()
    assert_fails(tmp_path, src, r"aclImdb/test/neg: no \.txt reviews")
    (src / "aclImdb" / "test" / "neg").rmdir()
    assert_fails(tmp_path, src, r"aclImdb/test/neg: missing")


def test_missing_source_folder(tmp_path):
    assert_fails(tmp_path, tmp_path / "nowhere", r"does not exist")


@pytest.mark.skipif(not (SHARED / "imdb" / "train.parquet").exists(), reason="no shared IMDB parquet")
def test_shared_imdb_slice(tmp_path):
    """First 500 rows of the real parquet, checked against the reference tokenisation."""
    src = tmp_path / "imdb500"
    src.mkdir()
    rows = {}
    for split in ("train", "test"):
        table = pq.read_table(SHARED / "imdb" / f"{split}.parquet").slice(0, 500)
        pq.write_table(table, src / f"{split}.parquet")
        rows[split] = table.to_pylist()
    p = open_prepared(prepare("text", {"seq_len": 4000}, source=str(src), root=tmp_path / "c"))
    assert p.meta["counts"] == {"train": 500, "val": 500, "test": 500}
    for split, src_split in (("train", "train"), ("test", "test")):
        x, y = p.split(split)
        assert y.tolist() == [r["label"] for r in rows[src_split]]
        for i in (0, 1, 250, 499):
            np.testing.assert_array_equal(x[i], ids(rows[src_split][i]["text"], 4000))


@pytest.mark.skipif(not (SHARED / "imdb" / "train.parquet").exists(), reason="no shared IMDB parquet")
def test_shared_imdb_full(tmp_path):
    """The whole real set (15 s here, 600 MB written): 25,000 rows per split, length 4000."""
    path = prepare("text", {"seq_len": 4000}, source=str(SHARED / "imdb"), root=tmp_path / "c")
    p = open_prepared(path)
    assert p.meta["counts"] == {"train": 25000, "val": 25000, "test": 25000}
    assert p.meta["class_balance"]["train"] == [12500, 12500]
    for split in ("train", "val", "test"):
        x, y = p.split(split)
        assert x.shape == (25000, 4000) and x.dtype == np.uint16
        assert int(x.max()) <= 256 and (x[:, 0] > 0).all()
    np.testing.assert_array_equal(p.split("val")[0], p.split("test")[0])
    shutil.rmtree(path)  # pytest keeps recent tmp dirs; do not keep 600 MB in them
