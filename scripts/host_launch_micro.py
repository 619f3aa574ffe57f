"""Host cost per call of the pieces of a Triton launch on this machine (microseconds).

python scripts/host_launch_micro.py -> a torch allocation, a tiny Triton kernel through
kernel[grid](...), through the compiled kernel's [grid] runner, and through its raw
launcher; the polarity op's forward launcher and forward+backward for scale.
"""

import torch
import triton
import triton.language as tl

from lra.bench_kernels import host_us_per_call


@triton.jit
def _tiny(X, Y, n, a, b, c, d, e, f, g, h, BLOCK: tl.constexpr, FLAG: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < n), mask=offs < n)


def per_call(fn, n=2000):
    return host_us_per_call(fn, n, warmup=50)


x = torch.randn(64, device="cuda")
y = torch.empty_like(x)
args = (x, y, 64, 4096, 64, 8, 16, 2, 3, 5, 7)
ck = _tiny[(1, 1, 1)](*args, BLOCK=64, FLAG=True)
runner = ck[(1, 1, 1)]
stream = torch.cuda.current_stream().cuda_stream
ck._init_handles()
run, fn, meta = ck.run, ck.function, ck.packed_metadata
out = {
    "torch.empty": per_call(lambda: torch.empty(64, device="cuda")),
    "torch.zeros": per_call(lambda: torch.zeros(64, device="cuda")),
    "x.add_(1)": per_call(lambda: x.add_(1.0)),
    "triton jit launch": per_call(lambda: _tiny[(1, 1, 1)](*args, BLOCK=64, FLAG=True)),
    "compiled[grid](...)": per_call(lambda: ck[(1, 1, 1)](*args, 64, True)),
    "runner(...)": per_call(lambda: runner(*args, 64, True)),
    "raw launcher": per_call(lambda: run(1, 1, 1, stream, fn, meta, None, None, None, *args, 64, True)),
}
from attention_zoo.kernels.polarity import triton as fused  # noqa: E402

q, k, v = (torch.randn(1, 1, 64, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
p = torch.rand(1, 64, device="cuda") + 1
out["polarity _forward"] = per_call(lambda: fused._forward(q, k, v, p, None, None, 1e-6), 500)
leaves = [t.clone().requires_grad_() for t in (q, k, v, p)]
do = torch.randn_like(q)
out["polarity fwd+bwd autograd"] = per_call(
    lambda: torch.autograd.grad(fused.polarity_attention(*leaves), leaves, do), 500)
out["empty autograd fn"] = per_call(lambda: torch.autograd.grad((leaves[0] * 1.0), leaves[0], do), 500)
for name, us in out.items():
    print(f"{name:>28}: {us:7.1f} us")
