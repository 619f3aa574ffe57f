"""One run on several processes (DDP, gloo on CPU) follows the single-process run: the
same global batch per step, so the same loss curve up to float summation order."""

import json
from pathlib import Path

import pytest
import torch

from lra import distributed, records, sweep
from lra.config import ConfigError
from lra.data import TrainSampler

SETS = {"data.n_train": "200", "data.n_val": "50", "data.n_test": "50", "data.max_length": "40",
        "data.seq_len": "40", "model.layers": "1", "train.warmup": "5", "train.steps": "20",
        "train.eval_every": "5", "model.dropout": "0", "train.batch_size": "32"}


def test_rank_slices_make_the_global_batch():
    world, batch = 4, 32
    samplers = [TrainSampler(200, batch, 0, torch.device("cpu")) for _ in range(world)]
    single = TrainSampler(200, batch, 0, torch.device("cpu"))
    for _ in range(15):  # crosses epoch boundaries
        slices = [s.next()[r * batch // world:(r + 1) * batch // world] for r, s in enumerate(samplers)]
        assert torch.equal(torch.cat(slices), single.next())


def test_two_gloo_processes_follow_one_process(tmp_path):
    one = sweep.run_single("listops", "softmax", "quick", 0, SETS, out=tmp_path / "one", device="cpu",
                           progress=False, log=lambda *_: None)
    two = sweep.run_single("listops", "softmax", "quick", 0, SETS, out=tmp_path / "two", device="cpu",
                           progress=False, devices=2)
    assert one["status"] == two["status"] == "finished", two
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert Path(one["dir"]).relative_to(tmp_path / "one") == Path(two["dir"]).relative_to(tmp_path / "two")
    curve_one = records.read_jsonl(Path(one["dir"]) / records.METRICS)
    curve_two = records.read_jsonl(Path(two["dir"]) / records.METRICS)
    assert [m["step"] for m in curve_one] == [m["step"] for m in curve_two] == [5, 10, 15, 20]
    for a, b in zip(curve_one, curve_two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5, abs=1e-6)
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-12)
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5, abs=1e-6)
    assert two["best_step"] == one["best_step"]
    assert not list((tmp_path / "two").rglob("checkpoint.pt"))
    config = json.loads((Path(two["dir"]) / records.CONFIG).read_text())
    assert config["config_hash"] == one["config_hash"]


def test_batch_must_split_across_devices(tmp_path):
    with pytest.raises(ConfigError, match="not divisible by --devices 3"):
        sweep.run_single("listops", "softmax", "quick", 0, SETS, out=tmp_path, device="cpu", devices=3)


def test_launch_environment_keeps_nvlink_multicast_off():
    env = distributed.safe_env({"NCCL_NVLS_ENABLE": "1", "PATH": "/bin"})
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
    assert env["NVSHMEM_DISABLE_NVLS"] == "1" and env["PATH"] == "/bin"


def test_single_process_helpers_are_identities():
    assert distributed.info() == distributed.DistInfo(0, 1, 0) and distributed.info().main
    t = torch.tensor([3.0])
    assert distributed.all_reduce_(t) is t and t.item() == 3.0
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.agree(True, torch.device("cpu")) and not distributed.agree(False, torch.device("cpu"))
