"""Retrieval task (AAN pairs): release tsv parsing, two-document byte tokens, bad rows."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tasks.base import DataError
from tasks.cache import open_prepared, prepare

ROWS = {  # file split -> rows (label, id1, id2, text1, text2)
    "train": [
        ("1.0", "P00-1001", "P98-2002", "Parsing with CCG.", "Grammar induction — a survey"),
        ("0.0", "W03-0101", "J93-2004", "A short one", "x" * 50),
        ("1", "C04-1", "C04-2", "", "empty first document"),
    ],
    "eval": [("0.0", "a", "b", "eval doc one", "eval doc two")],
    "test": [("1.0", "c", "d", "test doc", "another test doc"), ("0.0", "e", "f", "t3", "t4")],
}


def write_release(folder: Path, rows=ROWS, sub: str = ".") -> Path:
    d = folder / sub
    d.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        text = "".join("\t".join(cols) + "\n" for cols in lines)
        (d / f"new_aan_pairs.{split}.tsv").write_bytes(text.encode("utf-8"))
    return folder


def ids(text: str, seq_len: int) -> list[int]:
    b = list(text.encode("utf-8"))[:seq_len]
    return [v + 1 for v in b] + [0] * (seq_len - len(b))


def assert_fails(tmp_path: Path, source, pattern: str) -> str:
    root = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        prepare("retrieval", {"seq_len": 16}, source=str(source), root=root)
    msg = str(err.value)
    assert "\n" not in msg
    assert re.search(pattern, msg), msg
    assert not root.exists() or list(root.iterdir()) == []
    return msg


def test_release_files_tokenised_as_two_byte_documents(tmp_path):
    p = open_prepared(prepare("retrieval", {"seq_len": 16}, source=str(write_release(tmp_path / "src")), root=tmp_path / "c"))
    assert p.meta["num_docs"] == 2 and p.vocab_size == 257 and p.seq_len == 16
    assert p.meta["counts"] == {"train": 3, "val": 1, "test": 2}
    for split, fsplit in (("train", "train"), ("val", "eval"), ("test", "test")):
        x, y = p.split(split)
        rows = ROWS[fsplit]
        assert x.shape == (len(rows), 2, 16) and x.dtype == np.uint16
        assert y.tolist() == [int(float(r[0])) for r in rows]
        for got, r in zip(x, rows):
            assert got[0].tolist() == ids(r[3], 16) and got[1].tolist() == ids(r[4], 16)
    assert p.meta["info"]["docs_at_full_length"]["train"] == 4  # documents of >= 16 bytes


def test_pad_to_cuts_each_document_at_seq_len_then_pads(tmp_path):
    """``pad_to`` (the Skyformer code's create_retrieval.py: 4,000 then 4,096): each document is
    its ``seq_len`` tokenisation followed by zeros."""
    p = open_prepared(prepare("retrieval", {"seq_len": 16, "pad_to": 20}, source=str(write_release(tmp_path / "src")),
                              root=tmp_path / "c"))
    assert p.seq_len == 20
    x, _ = p.split("train")
    assert x.shape == (3, 2, 20)
    for got, r in zip(x, ROWS["train"]):
        assert got[0].tolist() == ids(r[3], 16) + [0] * 4 and got[1].tolist() == ids(r[4], 16) + [0] * 4
    assert p.meta["info"]["docs_at_full_length"]["train"] == 4  # counted at seq_len, not pad_to


@pytest.mark.parametrize("sub", ["tsv_data", "data/aan", "lra_release/tsv_data"])
def test_release_subfolders(tmp_path, sub):
    p = open_prepared(prepare("retrieval", {"seq_len": 8}, source=str(write_release(tmp_path / "src", sub=sub)), root=tmp_path / "c"))
    assert p.meta["counts"] == {"train": 3, "val": 1, "test": 2}


def test_blank_lines_and_crlf_are_tolerated(tmp_path):
    src = write_release(tmp_path / "src")
    (src / "new_aan_pairs.eval.tsv").write_bytes(b"\n1.0\ta\tb\tdoc one\tdoc two\r\n\n")
    x, y = open_prepared(prepare("retrieval", {"seq_len": 8}, source=str(src), root=tmp_path / "c")).split("val")
    assert y.tolist() == [1] and x[0, 1].tolist() == ids("doc two", 8)


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("1.0\ta\tb\tonly four", r"new_aan_pairs\.test\.tsv:2: expected 5 tab-separated columns .* got 4"),
        ("1.0\ta\tb\tc\td\textra", r"new_aan_pairs\.test\.tsv:2: expected 5 tab-separated columns .* got 6"),
        ("yes\ta\tb\tc\td", r"new_aan_pairs\.test\.tsv:2: label 'yes' is not a number"),
        ("2.0\ta\tb\tc\td", r"new_aan_pairs\.test\.tsv:2: label 2 is not 0 or 1"),
        ("0.5\ta\tb\tc\td", r"new_aan_pairs\.test\.tsv:2: label 0\.5 is not 0 or 1"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, line, pattern):
    src = write_release(tmp_path / "src")
    good = "\t".join(ROWS["test"][0])
    (src / "new_aan_pairs.test.tsv").write_text(f"{good}\n{line}\n{good}\n")
    msg = assert_fails(tmp_path, src, pattern)
    assert str(src / "new_aan_pairs.test.tsv") in msg


def test_missing_and_empty_files(tmp_path):
    src = write_release(tmp_path / "src")
    (src / "new_aan_pairs.eval.tsv").unlink()
    assert_fails(tmp_path, src, r"src: no new_aan_pairs\.eval\.tsv \(looked in")
    (src / "tsv_data").mkdir()
    (src / "tsv_data" / "new_aan_pairs.eval.tsv").write_text("\n")
    assert_fails(tmp_path, src, r"src: the three new_aan_pairs files are not in one folder")
    (src / "new_aan_pairs.eval.tsv").write_text("\n")
    assert_fails(tmp_path, src, r"new_aan_pairs\.eval\.tsv: no rows")


def test_hub_source_downloads_the_three_files(tmp_path, monkeypatch):
    import huggingface_hub

    local = write_release(tmp_path / "snapshot", sub="data/aan")
    asked = []

    def fake_download(repo_id, filename, repo_type=None, **kwargs):
        asked.append((repo_id, filename, repo_type))
        return str(local / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    p = open_prepared(prepare("retrieval", {"seq_len": 8}, source="hub", root=tmp_path / "c"))
    assert p.meta["counts"] == {"train": 3, "val": 1, "test": 2}
    assert ("OpenNLPLab/lra", "data/aan/new_aan_pairs.eval.tsv", "dataset") in asked

    def offline(*args, **kwargs):
        raise OSError("Cannot reach https://huggingface.co: offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    msg = assert_fails(tmp_path, "hub", r"hub OpenNLPLab/lra: could not download data/aan/new_aan_pairs\.train\.tsv \(OSError")
    assert "--source PATH" in msg
