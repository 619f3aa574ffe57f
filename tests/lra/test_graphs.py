"""CUDA-graph training steps (lra/graphs.py): which models may be captured, and on a GPU
that a graphed step gives the eager step's loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attention_zoo.registry import parse_spec
from lra import graphs, protocols
from lra.model import Classifier


def _model(spec: str, seq_len: int = 64) -> Classifier:
    name, hp = parse_spec(spec)
    cfg = protocols.resolve("listops", "quick", name, hp)
    return Classifier(cfg.model, 20, seq_len, 10)


def test_graph_safe_names_the_module_with_host_state():
    assert graphs.graph_safe(_model("softmax")) is None
    assert graphs.graph_safe(_model("performer")) is None  # redraw_interval 0: no host state
    unsafe = graphs.graph_safe(_model("performer:redraw_interval=10"))
    assert unsafe is not None and "attn" in unsafe


def test_try_capture_refuses_unsafe_models_with_one_line():
    lines: list[str] = []
    x = torch.zeros(2, 64, dtype=torch.long)
    got = graphs.try_capture(_model("performer:redraw_interval=10"), x, torch.zeros(2, dtype=torch.long),
                             torch.autocast, lines.append)
    assert got is None and len(lines) == 1 and "eager" in lines[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", ["softmax", "softmax:float32=true", "polarity", "linear"])
def test_graphed_step_matches_eager(spec):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = _model(f"{spec}", 256).to(dev)
    for m in model.modules():  # dropout off: the two steps must see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x = torch.randint(1, 20, (8, 256), device=dev)
    x[1, 200:] = 0  # padding
    y = torch.randint(0, 10, (8,), device=dev)

    def autocast(**kw):
        return torch.autocast("cuda", dtype=torch.bfloat16, **kw)

    step = graphs.GraphedStep(model, x, y, autocast)
    for _ in range(2):  # replays overwrite the gradients, never accumulate
        loss, logits = step(x, y)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    with autocast():
        ref_logits = model(x)
    ref = F.cross_entropy(ref_logits.float(), y)
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-3, atol=1e-4)
    for n, p in model.named_parameters():
        assert torch.allclose(got[n], p.grad, rtol=5e-2, atol=1e-4), n


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_attention_dropout_draws_anew_each_replay():
    """``softmax:dropout=0.1`` (the Skyformer attention) inside a CUDA graph: every replay
    draws a new dropout mask, as eager steps do, and the step stays finite."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = _model("softmax:dropout=0.1,float32=true", 256).to(dev)
    for m in model.modules():  # only the attention's dropout draws
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x = torch.randint(1, 20, (8, 256), device=dev)
    y = torch.randint(0, 10, (8,), device=dev)
    step = graphs.GraphedStep(model, x, y, lambda **kw: torch.autocast("cuda", dtype=torch.bfloat16, **kw))
    losses = [step(x, y)[0].item() for _ in range(3)]
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert len(set(losses)) == 3, losses
