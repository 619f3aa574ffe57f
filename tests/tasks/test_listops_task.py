"""ListOps task: the release tsv reader, tokenisation, and the prepared cache."""

import json

import numpy as np
import pytest

from tasks.base import DataError, get_task
from tasks.cache import open_prepared, prepare
from tasks.listops import TOKENS, encode, read_tsv

ROWS = [
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),
    ("( ( ( ( [SM 3 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 5 ) ] )", 2),
    ("( ( ( [MED 1 ) 8 ) ] )", 4),
]


def write_release(folder, rows=ROWS, header="Source\tTarget"):
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        lines = [header] + [f"{s}\t{t}" for s, t in rows]
        (folder / f"basic_{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_tokenisation_drops_parentheses_and_maps_bracket():
    ids = encode(["( ( ( [MAX 2 ) 9 ) ] )"], 8)[0]
    assert [TOKENS[i] for i in ids[:4]] == ["[MAX", "2", "9", "X"]
    assert (ids[4:] == 0).all() and TOKENS[0] == "[PAD]"


def test_truncates_to_seq_len():
    assert encode(["( ( ( [MAX 2 ) 9 ) ] )"], 2).shape == (1, 2)


def test_reader_parses_official_format(tmp_path):
    folder = write_release(tmp_path / "listops-1000")
    sources, labels, where = read_tsv(folder / "basic_train.tsv")
    assert sources == [s for s, _ in ROWS]
    assert labels.tolist() == [9, 2, 4]
    assert where[0].endswith("basic_train.tsv:2")


@pytest.mark.parametrize(
    "line, message",
    [
        ("( ( ( [MAX 2 ) 9 ) ] )", "expected 2 tab-separated columns"),
        ("( ( ( [MAX 2 ) 9 ) ] )\tnine", "is not an integer"),
        ("( ( ( [MAX 2 ) 9 ) ] )\t12", "outside 0..9"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "basic_train.tsv"
    path.write_text(f"Source\tTarget\n( ( ( [MIN 1 ) 2 ) ] )\t1\n{line}\n")
    with pytest.raises(DataError, match=message) as e:
        read_tsv(path)
    assert f"{path}:3" in str(e.value)


def test_bad_header(tmp_path):
    path = tmp_path / "basic_train.tsv"
    path.write_text("src\ttgt\n")
    with pytest.raises(DataError, match=f"{path}:1"):
        read_tsv(path)


def test_unknown_token_fails_and_leaves_no_cache(tmp_path):
    folder = write_release(tmp_path / "rel", rows=[("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( [AVG 2 ) 9 ) ] )", 5)])
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"basic_train\.tsv:3: unknown ListOps token '\[AVG'"):
        prepare("listops", {"seq_len": 16}, source=str(folder), root=root)
    assert not any(root.iterdir())


def test_missing_source_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="basic_"):
        prepare("listops", source=str(tmp_path / "nowhere"), root=tmp_path)


def test_prepare_release_then_noop(tmp_path):
    folder = write_release(tmp_path / "rel")
    root = tmp_path / "cache"
    path = prepare("listops", {"seq_len": 16}, source=str(folder), root=root)
    data = open_prepared(path)
    x, y = data.split("train")
    assert x.shape == (3, 16) and x.dtype == np.uint8 and y.tolist() == [9, 2, 4]
    assert isinstance(x, np.memmap)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["counts"] == {"train": 3, "val": 3, "test": 3}
    assert meta["vocab_size"] == len(TOKENS) and "seq_len16" in path.name
    assert json.loads((path / "vocab.json").read_text())["model"]["type"] == "WordLevel"
    mtime = (path / "meta.json").stat().st_mtime_ns
    assert prepare("listops", {"seq_len": 16}, source=str(folder), root=root) == path
    assert (path / "meta.json").stat().st_mtime_ns == mtime
    # other parameters -> another folder
    assert prepare("listops", {"seq_len": 32}, source=str(folder), root=root) != path


def test_two_builders_of_one_cache_leave_one_whole_cache(tmp_path, monkeypatch):
    """scripts/device_detached.sh may generate ListOps detached while a chain that reaches
    ListOps builds the same cache: whichever renames second keeps the first one's cache."""
    folder = write_release(tmp_path / "rel")
    root = tmp_path / "cache"
    task = get_task("listops")
    build = task.build
    inner = []

    def racing_build(params, source, progress):
        if not inner:  # the other builder starts and finishes while this one is building
            inner.append(None)
            inner[0] = prepare("listops", {"seq_len": 16}, source=str(folder), root=root)
        return build(params, source, progress)

    monkeypatch.setattr(task, "build", racing_build)
    path = prepare("listops", {"seq_len": 16}, source=str(folder), root=root)
    assert inner == [path]
    assert sorted(p.name for p in root.iterdir()) == [path.name]  # no temp folder left
    x, y = open_prepared(path).split("train")
    assert x.shape == (3, 16) and y.tolist() == [9, 2, 4]


def test_generated_splits_are_disjoint(tmp_path):
    params = dict(seq_len=64, min_length=10, max_length=64, n_train=60, n_val=20, n_test=20, seed=3)
    data = open_prepared(prepare("listops", params, root=tmp_path))
    rows = [set(map(bytes, data.split(s)[0])) for s in ("train", "val", "test")]
    assert sum(map(len, rows)) == 100 and len(set.union(*rows)) == 100
    assert data.meta["class_balance"]["train"] and sum(data.meta["class_balance"]["train"]) == 60


def test_impossible_parameters(tmp_path):
    with pytest.raises(DataError, match="max_length"):
        prepare("listops", {"seq_len": 100, "max_length": 500}, root=tmp_path)
    with pytest.raises(DataError, match="unknown data parameter 'length'"):
        prepare("listops", {"length": 100}, root=tmp_path)


def test_fast_encode_equals_the_tokenizer():
    from tasks import listops_gen
    from tasks.listops import fast_encode, make_tokenizer, pad_rows

    rows = [s for s, _ in listops_gen.generate(300, 5, min_length=3, max_length=300, workers=1)]
    odd = ["( [MAX  2\t9 ) ]", "[SM 1 ]", "", "( ( ( [MIN 0 ) 0 ) ] )  "]
    bad = ["[MAX 10 ]", "[MINX 1 ]", "[MI 1 ]", "[MAX2 ]", "[max 1 ]", "X] 1", "[SMM 1 ]", "( [MED 3 ) é ]"]
    sources = rows + odd + bad
    ids, ok = fast_encode(sources, 300)
    tok = make_tokenizer()
    ref = pad_rows([e.ids for e in tok.encode_batch(sources)], 300, ids.dtype)
    unk = TOKENS.index("[UNK]")
    has_unk = (ref == unk).any(1)
    assert has_unk[-len(bad):].all() and not has_unk[: -len(bad)].any()
    assert (ok == ~has_unk).all()  # exactly the rows with an unknown token leave the fast path
    assert (ids[ok] == ref[ok]).all()
    assert (encode(rows + odd, 300) == ref[: -len(bad)]).all()
