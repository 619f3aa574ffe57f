"""Image task (CIFAR-10 grayscale): TF's grayscale arithmetic, every source, splits, bad input."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.base import DataError
from tasks.cache import open_prepared, prepare
from tasks.image import rgb_to_grayscale

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def tf_gray(r: int, g: int, b: int) -> int:
    """tf.image.rgb_to_grayscale on uint8, written out: x/255, weights, *255.5, truncate."""
    return int((r / 255 * 0.2989 + g / 255 * 0.5870 + b / 255 * 0.1140) * 255.5)


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(path: Path, rgb: np.ndarray, labels: np.ndarray, blobs: list[bytes] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blobs = blobs if blobs is not None else [png(im) for im in rgb]
    img = pa.array([{"bytes": b, "path": None} for b in blobs],
                   pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"img": img, "label": pa.array(labels, pa.int64())}), path)


def write_pickles(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chw = lambda rgb: rgb.transpose(0, 3, 1, 2).reshape(len(rgb), 3072)  # noqa: E731  release layout
    per = len(train[1]) // 5
    for k in range(5):
        part = slice(k * per, (k + 1) * per)
        with open(folder / f"data_batch_{k + 1}", "wb") as f:
            pickle.dump({b"data": chw(train[0][part]), b"labels": train[1][part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": chw(test[0]), b"labels": test[1].tolist()}, f)


def assert_fails(tmp_path: Path, source, pattern: str) -> str:
    root = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        prepare("image", {"split_seed": -1}, source=str(source), root=root)
    msg = str(err.value)
    assert "\n" not in msg
    assert re.search(pattern, msg), msg
    assert not root.exists() or list(root.iterdir()) == []
    return msg


@pytest.mark.parametrize(
    "rgb, gray",
    [
        ((0, 0, 0), 0),
        ((255, 255, 255), 255),  # weights sum to 0.9999: 255.47 truncates to 255
        ((255, 0, 0), 76),  # 76.37
        ((0, 255, 0), 149),  # 149.98: truncated, not rounded (rounding gives 150)
        ((0, 0, 255), 29),  # 29.13
        ((100, 150, 200), 141),  # 141.02
    ],
)
def test_grayscale_of_known_pixels(rgb, gray):
    assert tf_gray(*rgb) == gray
    assert rgb_to_grayscale(np.array([[rgb]], dtype=np.uint8))[0, 0] == gray


def test_grayscale_keeps_gray_values_and_matches_the_formula():
    v = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(rgb_to_grayscale(np.stack([v, v, v], -1)), v)
    rgb, _ = make_images(8, 0)
    want = np.array([[[tf_gray(*map(int, px)) for px in row] for row in im] for im in rgb])
    got = rgb_to_grayscale(rgb)
    assert got.dtype == np.uint8
    # float32 (ours, TF's) against float64 (the reference here): equal but for rare ties
    assert np.abs(got.astype(int) - want).max() <= 1 and (got == want).mean() > 0.999


def test_parquet_and_pickles_agree_and_split_like_lra(tmp_path):
    train, test = make_images(20, 1), make_images(6, 2)
    write_parquet(tmp_path / "pq" / "train.parquet", *train)
    write_parquet(tmp_path / "pq" / "test.parquet", *test)
    write_pickles(tmp_path / "py" / "cifar-10-batches-py", train, test)
    hashes = set()
    for source in (tmp_path / "pq", tmp_path / "py", tmp_path / "py" / "cifar-10-batches-py"):
        p = open_prepared(prepare("image", {"split_seed": -1}, source=str(source), root=tmp_path / "c"))
        assert p.meta["counts"] == {"train": 18, "val": 2, "test": 6}
        assert p.vocab_size == 256 and p.seq_len == 1024
        x, y = p.split("train")
        assert x.shape == (18, 1024) and x.dtype == np.uint8
        np.testing.assert_array_equal(y, train[1][:18])
        np.testing.assert_array_equal(x, rgb_to_grayscale(train[0][:18]).reshape(18, 1024))
        np.testing.assert_array_equal(p.split("val")[1], train[1][18:])
        np.testing.assert_array_equal(p.split("test")[0], rgb_to_grayscale(test[0]).reshape(6, 1024))
        hashes.add(p.meta["content_sha256"])
    assert len(hashes) == 1


def test_pixels_are_row_major_and_chw_is_undone(tmp_path):
    rgb = np.zeros((10, 32, 32, 3), dtype=np.uint8)
    rgb[:, 0, 1] = (255, 0, 0)  # row 0, column 1 -> token 1
    rgb[:, 2, 0] = (0, 255, 0)  # row 2, column 0 -> token 64
    labels = np.arange(10)
    write_pickles(tmp_path / "py", (rgb, labels), (rgb[:2], labels[:2]))
    x, _ = open_prepared(prepare("image", {"split_seed": -1}, source=str(tmp_path / "py"), root=tmp_path / "c")).split("test")
    assert x[0, 1] == 76 and x[0, 64] == 149 and x[0].sum() == 76 + 149


def test_split_seed_shuffles_train_before_the_cut(tmp_path):
    """A label-sorted source (like the shared parquet) must not give a one-class val."""
    rgb, _ = make_images(100, 3)
    labels = np.repeat(np.arange(10), 10)  # sorted by class
    write_parquet(tmp_path / "pq" / "train.parquet", rgb, labels)
    write_parquet(tmp_path / "pq" / "test.parquet", rgb[:10], labels[:10])
    p0 = open_prepared(prepare("image", None, source=str(tmp_path / "pq"), root=tmp_path / "c"))
    x, y = p0.split("val")
    assert len(y) == 10 and len(set(y.tolist())) > 1
    order = np.random.default_rng(0).permutation(100)
    np.testing.assert_array_equal(y, labels[order][90:])
    np.testing.assert_array_equal(x, rgb_to_grayscale(rgb[order][90:]).reshape(10, 1024))
    kept = open_prepared(prepare("image", {"split_seed": -1}, source=str(tmp_path / "pq"), root=tmp_path / "c"))
    assert kept.split("val")[1].tolist() == [9] * 10
    with pytest.raises(DataError, match="split_seed"):
        prepare("image", {"split_seed": -2}, source=str(tmp_path / "pq"), root=tmp_path / "c")


def test_hub_source(tmp_path, monkeypatch):
    import datasets

    train, test = make_images(10, 4), make_images(3, 5)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})

    def fake_load_dataset(name, *args, **kwargs):
        assert name == "uoft-cs/cifar10"
        return datasets.DatasetDict({
            s: datasets.Dataset.from_dict(
                {"img": [{"bytes": png(im), "path": None} for im in rgb], "label": lab.tolist()}, features=features)
            for s, (rgb, lab) in (("train", train), ("test", test))
        })

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    p = open_prepared(prepare("image", {"split_seed": -1}, source="hub", root=tmp_path / "c"))
    assert p.meta["counts"] == {"train": 9, "val": 1, "test": 3}
    np.testing.assert_array_equal(p.split("test")[0], rgb_to_grayscale(test[0]).reshape(3, 1024))

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'uoft-cs/cifar10' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    msg = assert_fails(tmp_path, "hub", r"hub uoft-cs/cifar10: could not load \(ConnectionError")
    assert "cifar-10-batches-py" in msg and "--source PATH" in msg


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("garbage_image", r"test\.parquet: row 1: cannot decode image"),
        ("wrong_size", r"test\.parquet: row 0: image is 16x16, expected 32x32"),
        ("no_img_column", r"train\.parquet: no column 'img' \(has pixels, label\)"),
        ("label_out_of_range", r"train\.parquet: row 3 has label 10, outside 0\.\.9"),
        ("no_test_split", r"no test\.parquet"),
    ],
)
def test_malformed_parquet(tmp_path, case, pattern):
    train, test = make_images(10, 6), make_images(3, 7)
    src = tmp_path / "src"
    write_parquet(src / "train.parquet", *train)
    write_parquet(src / "test.parquet", *test)
    blobs = [png(im) for im in test[0]]
    if case == "garbage_image":
        write_parquet(src / "test.parquet", *test, blobs=[blobs[0], b"\x89PNG not really", blobs[2]])
    elif case == "wrong_size":
        write_parquet(src / "test.parquet", *test, blobs=[png(test[0][0, :16, :16].copy())] + blobs[1:])
    elif case == "no_img_column":
        pq.write_table(pa.table({"pixels": [b"x"], "label": [0]}), src / "train.parquet")
    elif case == "label_out_of_range":
        labels = train[1].copy()
        labels[3] = 10
        write_parquet(src / "train.parquet", train[0], labels)
    elif case == "no_test_split":
        (src / "test.parquet").unlink()
    assert_fails(tmp_path, src, pattern)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing_batch", r"data_batch_3: missing"),
        ("not_a_pickle", r"data_batch_2: not a CIFAR-10 python batch"),
        ("no_labels_key", r"test_batch: expected a dict with b'data' and b'labels'"),
        ("wrong_shape", r"data_batch_1: b'data' is uint8 \(2, 1024\), expected uint8 \(N, 3072\)"),
        ("label_out_of_range", r"data_batch_5: row 1 has label 12, outside 0\.\.9"),
        ("label_count", r"test_batch: b'labels' has \(1,\) int64, expected 2 integers"),
    ],
)
def test_malformed_pickles(tmp_path, case, pattern):
    src = tmp_path / "cifar-10-batches-py"
    write_pickles(src, make_images(10, 8), make_images(2, 9))

    def put(name, obj):
        with open(src / name, "wb") as f:
            pickle.dump(obj, f)

    if case == "missing_batch":
        (src / "data_batch_3").unlink()
    elif case == "not_a_pickle":
        (src / "data_batch_2").write_bytes(b"garbage")
    elif case == "no_labels_key":
        put("test_batch", {b"data": np.zeros((2, 3072), np.uint8)})
    elif case == "wrong_shape":
        put("data_batch_1", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
    elif case == "label_out_of_range":
        put("data_batch_5", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]})
    elif case == "label_count":
        put("test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    assert_fails(tmp_path, src, pattern)


def test_mask_zero_default_is_lra(tmp_path):
    from tasks.base import get_task

    assert get_task("image").mask_zero_default is True  # black pixels count as padding, as in LRA


@pytest.mark.skipif(not (SHARED / "cifar10" / "train.parquet").exists(), reason="no shared CIFAR-10 parquet")
def test_shared_cifar10_slice(tmp_path):
    """First 500 rows of each real parquet (JPEG), checked against PIL + the written-out formula."""
    src = tmp_path / "cifar500"
    src.mkdir()
    tables = {}
    for split in ("train", "test"):
        tables[split] = pq.read_table(SHARED / "cifar10" / f"{split}.parquet").slice(0, 500)
        pq.write_table(tables[split], src / f"{split}.parquet")
    p = open_prepared(prepare("image", {"split_seed": -1}, source=str(src), root=tmp_path / "c"))
    assert p.meta["counts"] == {"train": 450, "val": 50, "test": 500}
    x, y = p.split("test")
    rows = tables["test"].to_pylist()
    assert y.tolist() == [r["label"] for r in rows]
    for i in (0, 123, 499):
        rgb = np.asarray(Image.open(io.BytesIO(rows[i]["img"]["bytes"])).convert("RGB"))
        want = np.array([tf_gray(*map(int, px)) for px in rgb.reshape(-1, 3)])
        assert np.abs(x[i].astype(int) - want).max() <= 1 and (x[i] == want).mean() > 0.99


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "cifar10" / "train.parquet").exists(), reason="no shared CIFAR-10 parquet")
def test_shared_cifar10_full(tmp_path):
    """The whole real set: 45,000 / 5,000 / 10,000 rows of 1024 pixels (20-36 s on 2 shared cores)."""
    path = prepare("image", None, source=str(SHARED / "cifar10"), root=tmp_path / "c")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["counts"] == {"train": 45000, "val": 5000, "test": 10000}
    assert meta["class_balance"]["test"] == [1000] * 10
    assert min(meta["class_balance"]["val"]) > 400  # the shuffle before the cut
    p = open_prepared(path)
    for split, n in meta["counts"].items():
        x, y = p.split(split)
        assert x.shape == (n, 1024) and x.dtype == np.uint8 and len(y) == n
    shutil.rmtree(path)
