"""One training step's forward, loss and backward as a CUDA graph (``train.cuda_graph``).

The LRA models are small (2 layers, width 64), so an eager step on a GPU spends most of
its time in Python and kernel launches: ~100 small ops a layer, each a few microseconds
of host work, while the GPU finishes each in less. Capturing forward + loss + backward
once and replaying it turns those launches into one; the optimizer, the clipping and
the schedule stay eager (they change learning rate and momentum between steps).

Whole-network capture, as PyTorch documents it: the step is warmed up on a side stream,
the gradients are set to None, and the capture allocates them, so every replay
overwrites the same ``.grad`` tensors (the loop must not call ``zero_grad``). Inputs are
copied into static buffers before each replay; the returned loss and logits are static
too, valid until the next replay. Dropout draws fresh masks on every replay (the CUDA
generator is graph-aware), so a graphed run is as random as an eager one, not the same
numbers.

Used when the device is CUDA, the run is not distributed, and every module is graph-safe
(a module with host-side state that changes between steps, like Performer's feature
redraw counter, sets ``cuda_graph_safe = False``). A capture that fails falls back to
eager steps with one log line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def graph_safe(model: nn.Module) -> str | None:
    """None if every module may be captured, else the name of the first that may not."""
    for name, module in model.named_modules():
        if not getattr(module, "cuda_graph_safe", True):
            return name or type(module).__name__
    return None


class GraphedStep:
    """``step(x, y) -> (loss, logits)``: forward, cross-entropy loss and backward of ``model``
    replayed from a CUDA graph. ``x``, ``y`` must have the shapes of the capture batch."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, autocast: Callable[..., Any],
                 warmup: int = 3) -> None:
        self.static_x = x.clone()
        self.static_y = y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # first launches (Triton compiles, cuBLAS/cuDNN set-up) off the capture
            for _ in range(warmup):
                model.zero_grad(set_to_none=True)
                self._forward_backward(model, autocast)
        torch.cuda.current_stream().wait_stream(side)
        model.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.logits = self._forward_backward(model, autocast)

    def _forward_backward(self, model: nn.Module, autocast: Callable[..., Any]) -> tuple[Tensor, Tensor]:
        with autocast(cache_enabled=False):  # autocast's weight cast cache cannot live across replays
            logits = model(self.static_x)
        loss = F.cross_entropy(logits.float(), self.static_y)
        loss.backward()
        return loss.detach(), logits.detach()

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        return self.loss, self.logits


def try_capture(model: nn.Module, x: Tensor, y: Tensor, autocast: Callable[..., Any],
                log: Callable[[str], Any]) -> GraphedStep | None:
    """A ``GraphedStep`` for ``model``, or None (with one log line) where it cannot be used."""
    unsafe = graph_safe(model)
    if unsafe is not None:
        log(f"cuda graph: off ({unsafe} changes host-side state between steps); running eager steps")
        return None
    try:
        return GraphedStep(model, x, y, autocast)
    except Exception as e:  # an op that syncs with the host or has dynamic shapes: eager steps
        torch.cuda.synchronize()
        model.zero_grad(set_to_none=True)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        log(f"cuda graph: capture failed ({type(e).__name__}: {first}); running eager steps")
        return None


__all__ = ["GraphedStep", "graph_safe", "try_capture"]
