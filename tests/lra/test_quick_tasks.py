"""Every task trains under the quick protocol (a few steps here; minutes in full), and every
variant trains on quick ListOps without NaN."""

import pyarrow.parquet as pq
import pytest
import torch

import attention_zoo
from lra import protocols
from lra.train import train
from tests.conftest import SHARED_DATA

STEPS = {"train.steps": 6, "train.eval_every": 3, "train.warmup": 1}


def _run(task, tmp_path, attention="softmax", source=None, **overrides):
    cfg = protocols.resolve(task, "quick", attention, seed=0, overrides={**STEPS, **overrides}, source=source)
    return train(cfg, tmp_path / "runs", torch.device("cpu"), progress=False, log=lambda *_: None)


def _slice_parquet(src, dst, rows):
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        table = pq.read_table(src / f"{split}.parquet")
        # rows from both ends: the shared files are sorted by label
        idx = list(range(rows // 2)) + list(range(table.num_rows - rows // 2, table.num_rows))
        pq.write_table(table.take(idx), dst / f"{split}.parquet")
    return dst


def _aan(folder, n=40):
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval", "test"):
        lines = [f"{i % 2}.0\tid{i}a\tid{i}b\tpaper {i} about graphs\tpaper {i} cites {'graphs' if i % 2 else 'cats'}"
                 for i in range(n)]
        (folder / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_quick_listops(tmp_path):
    r = _run("listops", tmp_path, **{"data.size": 64})
    assert r["status"] == "finished" and 0 <= r["test_acc"] <= 1


def test_quick_pathfinder(tmp_path):
    r = _run("pathfinder", tmp_path, **{"data.n": 80, "train.batch_size": 8})
    assert r["status"] == "finished"


def test_quick_retrieval(tmp_path):
    r = _run("retrieval", tmp_path, source=str(_aan(tmp_path / "aan")), **{"train.batch_size": 8})
    assert r["status"] == "finished"


@pytest.mark.skipif(not (SHARED_DATA / "imdb").exists(), reason="needs ../shared/data")
def test_quick_text(tmp_path):
    src = _slice_parquet(SHARED_DATA / "imdb", tmp_path / "imdb", 80)
    r = _run("text", tmp_path, source=str(src), **{"train.batch_size": 8})
    assert r["status"] == "finished"


@pytest.mark.skipif(not (SHARED_DATA / "cifar10").exists(), reason="needs ../shared/data")
def test_quick_image(tmp_path):
    src = _slice_parquet(SHARED_DATA / "cifar10", tmp_path / "cifar", 80)
    r = _run("image", tmp_path, source=str(src), **{"train.batch_size": 8})
    assert r["status"] == "finished"


@pytest.mark.parametrize("name", attention_zoo.names())
def test_every_variant_trains_on_quick_listops(name, tmp_path_factory):
    # small shared data (cache in the session's LRA_DATA), a few steps; a NaN would mark it diverged
    r = _run("listops", tmp_path_factory.mktemp(name), attention=name,
             **{"data.size": 64, "train.batch_size": 8, "model.layers": 1})
    assert r["status"] == "finished", r["status"]
    assert r["best_val_acc"] is not None
