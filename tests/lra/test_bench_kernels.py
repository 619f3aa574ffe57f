"""Kernel benchmark pieces that run without a GPU: the table and the CPU refusal."""

import pytest
import torch
from lra import bench_kernels as bk
from tests.test_cli import lra_subprocess


def _row(impl, graph=True, status="ok"):
    row = {"shape": "32x2x4096x32", "B": 32, "H": 2, "L": 4096, "D": 32, "dtype": "bf16", "impl": impl,
           "fwd_ms": 0.0634, "fwd_bwd_ms": 0.5841, "fwd_mem_mb": 17.0, "fwd_bwd_mem_mb": 52.0,
           "fwd_graph_ms": 0.041 if graph else None, "fwd_bwd_graph_ms": 0.2213 if graph else None,
           "status": status}
    if impl == "triton":
        row.update(fwd_gbps=2116.0, fwd_bw_frac=0.7055, byte_floor_ms=0.0447)
    return row


def test_table_has_eager_and_graph_columns():
    lines = bk.format_table([_row("triton"), _row("sdpa_flash", graph=False, status="oom")]).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[3:7] == ["fwd ms", "fwd+bwd ms", "graph fwd ms", "graph fwd+bwd ms"]
    triton_cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert triton_cells[3:7] == ["0.063", "0.584", "0.041", "0.221"]
    assert triton_cells[9] == "2116 (71%)"
    sdpa_cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert sdpa_cells[5:7] == ["-", "-"] and sdpa_cells[-1] == "oom"
    assert len(lines) == 4 and all(len(line.split("|")) == len(lines[0].split("|")) for line in lines)


def test_row_line_mentions_graph_replay_only_when_measured():
    assert "graph replay 0.041 / 0.221 ms" in bk._row_line(_row("triton"))
    assert "graph" not in bk._row_line(_row("triton", graph=False))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cli_refuses_without_cuda_in_one_line():
    r = lra_subprocess("bench", "kernels", "--no-graphs")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: lra bench kernels needs a CUDA GPU"), r.stderr
