"""Pathfinder task: release folders (both metadata kinds), the generator source, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.base import DataError, get_task
from tasks.cache import open_prepared, prepare

BATCHES = (2, 10)  # numeric order 2, 10; a name sort would put 10 first
PER_BATCH = 6
EMPTY = (10, 3)  # (batch, sample) written as a 0-byte file, as in the release


def image_of(batch: int, i: int, size: int) -> np.ndarray:
    """A recognisable image: pixel (0, 0) = batch, (0, 1) = sample index, a black row."""
    im = np.full((size, size), 7, dtype=np.uint8)
    im[0, 0], im[0, 1] = batch, i
    im[1] = 0
    return im


def label_of(batch: int, i: int) -> int:
    return (batch + i) % 2


def write_release(top: Path, *, kind: str = "text", size: int = 32, curv: str = "curv_contour_length_14",
                  extra: dict[str, str] | None = None) -> Path:
    """``top/pathfinder<size>/<curv>/{imgs,metadata}`` in the release layout; returns the curv folder."""
    root = top / f"pathfinder{size}" / curv
    (root / "metadata").mkdir(parents=True)
    for b in BATCHES:
        (root / "imgs" / str(b)).mkdir(parents=True)
        rows = []
        for i in range(PER_BATCH):
            path = root / "imgs" / str(b) / f"sample_{i}.png"
            if (b, i) == EMPTY:
                path.write_bytes(b"")
            else:
                Image.fromarray(image_of(b, i, size), "L").save(path)
            rows.append([f"imgs/{b}", f"sample_{i}.png", str(i), str(label_of(b, i)), "1.0", "14", "1.5"])
        meta = root / "metadata" / f"{b}.npy"
        if kind == "text":
            meta.write_text("".join(" ".join(r) + "\n" for r in rows))
        else:
            with open(meta, "wb") as f:  # np.save to an open file keeps the .npy name as is
                np.save(f, np.array(rows))
    for name, text in (extra or {}).items():
        (root / "metadata" / name).write_text(text)
    return root


def expected(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    keep = [(b, i) for b in BATCHES for i in range(PER_BATCH) if (b, i) != EMPTY]
    x = np.stack([image_of(b, i, size).reshape(-1) for b, i in keep])
    return x, np.array([label_of(b, i) for b, i in keep])


def assert_fails(tmp_path: Path, source, pattern: str, params=None) -> str:
    root = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        prepare("pathfinder", params, source=str(source), root=root)
    msg = str(err.value)
    assert "\n" not in msg
    assert re.search(pattern, msg), msg
    assert not root.exists() or list(root.iterdir()) == []
    return msg


@pytest.mark.parametrize("kind", ["text", "npy"])
def test_release_folder_order_split_and_empty_file(tmp_path, kind):
    curv = write_release(tmp_path / "rel", kind=kind)
    p = open_prepared(prepare("pathfinder", None, source=str(curv), root=tmp_path / "c"))
    x, y = expected()
    assert len(y) == 11  # 12 listed, one empty file skipped
    assert p.meta["counts"] == {"train": 8, "val": 1, "test": 2}
    assert p.seq_len == 1024 and p.vocab_size == 256
    got = [p.split(s) for s in ("train", "val", "test")]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), x)
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), y)
    assert got[0][0].dtype == np.uint8 and got[0][0].shape == (8, 1024)
    assert p.meta["info"]["skipped_empty"] == ["imgs/10/sample_3.png"]


def test_both_metadata_kinds_and_every_way_to_name_the_folder_agree(tmp_path):
    hashes = set()
    for kind in ("text", "npy"):
        top = tmp_path / kind
        curv = write_release(top, kind=kind)
        for source in (curv, curv.parent, top):  # the curv folder, pathfinder32/, the release root
            meta = json.loads((prepare("pathfinder", None, source=str(source), root=tmp_path / "c") / "meta.json").read_text())
            hashes.add(meta["content_sha256"])
    assert len(hashes) == 1


def test_contour_length_6_is_curv_baseline_and_resolution_picks_the_folder(tmp_path):
    write_release(tmp_path / "rel", curv="curv_baseline")
    write_release(tmp_path / "rel", size=64, curv="curv_contour_length_9")
    p = open_prepared(prepare("pathfinder", {"contour_length": 6}, source=str(tmp_path / "rel"), root=tmp_path / "c"))
    assert p.meta["info"]["folder"].endswith("pathfinder32/curv_baseline")
    p = open_prepared(prepare("pathfinder", {"contour_length": 9, "resolution": 64}, source=str(tmp_path / "rel"),
                              root=tmp_path / "c"))
    assert p.seq_len == 4096 and p.split("train")[0].shape == (8, 4096)
    np.testing.assert_array_equal(p.split("train")[0], expected(64)[0][:8])


def test_combined_metadata_is_ignored_beside_numbered_batches(tmp_path):
    curv = write_release(tmp_path / "rel", extra={"combined.npy": "imgs/2 sample_0.png 0 1 1.0 14\n"})
    meta = json.loads((prepare("pathfinder", None, source=str(curv), root=tmp_path / "c") / "meta.json").read_text())
    assert sum(meta["counts"].values()) == 11 and meta["info"]["metadata_files"] == 2


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("short_line", r"metadata/10\.npy:2: expected at least 4 fields \(dir, file, index, label\), got 3"),
        ("bad_label", r"metadata/10\.npy:4: label 'x' is not a number"),
        ("label_2", r"metadata/2\.npy:1: label 2 is not 0 or 1"),
        ("missing_image", r"imgs/2/sample_5\.png: cannot read image \(FileNotFoundError.*\(listed at .*metadata/2\.npy:6\)"),
        ("corrupt_image", r"imgs/10/sample_1\.png: cannot decode image"),
        ("npy_1d", r"metadata/2\.npy: metadata array has shape \(3,\), expected \(rows, >= 4 fields\)"),
        ("npy_row_label", r"metadata/2\.npy: row 0: label 'nope' is not a number"),
        ("binary_metadata", r"metadata/2\.npy: neither an np\.save array nor UTF-8 text"),
        ("no_metadata", r"rel: no metadata/ folder here nor in"),
        ("no_rows", r"metadata: no rows"),
    ],
)
def test_malformed_release(tmp_path, case, pattern):
    curv = write_release(tmp_path / "rel")
    meta = curv / "metadata"

    def lines(b: int) -> list[str]:
        return (meta / f"{b}.npy").read_text().splitlines(keepends=True)

    if case == "short_line":
        ls = lines(10)
        ls[1] = "imgs/10 sample_1.png 1\n"
        (meta / "10.npy").write_text("".join(ls))
    elif case == "bad_label":
        ls = lines(10)
        ls[3] = " ".join(ls[3].split()[:3] + ["x"]) + "\n"
        (meta / "10.npy").write_text("".join(ls))
    elif case == "label_2":
        (meta / "2.npy").write_text("imgs/2 sample_0.png 0 2 1.0 14\n")
    elif case == "missing_image":
        (curv / "imgs" / "2" / "sample_5.png").unlink()
    elif case == "corrupt_image":
        (curv / "imgs" / "10" / "sample_1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif case == "npy_1d":
        with open(meta / "2.npy", "wb") as f:
            np.save(f, np.array(["a", "b", "c"]))
    elif case == "npy_row_label":
        with open(meta / "2.npy", "wb") as f:
            np.save(f, np.array([["imgs/2", "sample_0.png", "0", "nope"]]))
    elif case == "binary_metadata":
        (meta / "2.npy").write_bytes(b"\xff\xfe\x00garbage")
    elif case == "no_metadata":
        for f in meta.iterdir():
            f.unlink()
        meta.rmdir()
    elif case == "no_rows":
        for b in BATCHES:
            (meta / f"{b}.npy").write_text("\n")
    assert_fails(tmp_path, tmp_path / "rel", pattern)


def test_resolution_mismatch_names_the_image(tmp_path):
    write_release(tmp_path / "rel")
    (tmp_path / "rel" / "pathfinder32").rename(tmp_path / "rel" / "pathfinder64")  # 32x32 images filed as 64
    assert_fails(tmp_path, tmp_path / "rel", r"imgs/2/sample_0\.png: image is 32x32, expected 64x64 \(resolution\)",
                 {"resolution": 64})


def fake_generate(calls):
    def generate(n, seed, *, size=32, contour_length=14, workers=None, progress=None):
        calls.append(dict(n=n, seed=seed, size=size, contour_length=contour_length))
        x = (np.arange(n * size * size) % 251).astype(np.uint8).reshape(n, size, size)
        x[:, 0, 0] = np.arange(n)  # row order check
        if progress is not None:
            progress(n)
        return x, (np.arange(n) % 2).astype(np.int64)
    return generate


def test_generate_source_uses_the_generator_and_splits_in_order(tmp_path, monkeypatch):
    gen = pytest.importorskip("tasks.pathfinder_gen")
    calls = []
    monkeypatch.setattr(gen, "generate", fake_generate(calls))
    p = open_prepared(prepare("pathfinder", {"n": 50, "seed": 3, "resolution": 64, "contour_length": 9},
                              root=tmp_path / "c"))
    assert calls == [dict(n=50, seed=3, size=64, contour_length=9)]
    assert p.meta["counts"] == {"train": 40, "val": 5, "test": 5} and p.seq_len == 4096
    assert p.meta["source"] == "generate"
    x, y = p.split("val")
    assert x.shape == (5, 4096) and x[:, 0].tolist() == [40, 41, 42, 43, 44] and y.tolist() == [0, 1, 0, 1, 0]


def test_generator_output_is_checked(tmp_path, monkeypatch):
    gen = pytest.importorskip("tasks.pathfinder_gen")
    monkeypatch.setattr(gen, "generate", lambda n, seed, **kw: (np.zeros((n, 16, 16), np.uint8), np.zeros(n)))
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"generator returned images uint8\(20, 16, 16\) .* expected uint8 \(20, 32, 32\)"):
        prepare("pathfinder", {"n": 20}, root=root)
    assert list(root.iterdir()) == []


def test_real_generator_small_run(tmp_path):
    pytest.importorskip("tasks.pathfinder_gen")
    p = open_prepared(prepare("pathfinder", {"n": 10, "seed": 1}, root=tmp_path / "c"))
    assert p.meta["counts"] == {"train": 8, "val": 1, "test": 1}
    x, y = p.split("train")
    assert x.shape == (8, 1024) and x.dtype == np.uint8 and set(y.tolist()) <= {0, 1}
    assert 0 < (x > 0).mean() < 1  # background is black, contours are not


def test_params_and_path_x_length():
    task = get_task("pathfinder")
    assert task.seq_len(task.params({"resolution": 128})) == 16384
    assert "seq_len" not in task.default_params  # derived from resolution
    for bad in ({"resolution": 4}, {"n": 5}, {"seed": -1}, {"contour_length": 0}, {"seq_len": 10}):
        with pytest.raises(DataError):
            task.params(bad)
