"""How flat is a trained Performer's attention? A check on run checkpoints (CPU is fine).

For each Performer layer of a checkpointed run, on one batch of validation examples (the
protocol's batch size, so the batch-wide key maximum is the one training saw), it writes out
the attention weights the random features give, a_ij = phi(q_i).phi(k_j) / sum_j', and
reports, averaged over real queries (of the first ``--explicit`` examples):

* ``stab``: the share of each normaliser that comes from the stabiliser added to every key
  feature (m^-1/2 * stabiliser per feature): the part of the weights that is uniform by
  construction;
* ``feat``: 1 - stab, the share the random features themselves carry (printed in full);
* ``pad``: the weight that lands on padded keys (zeroed, but counted in the Skyformer code's
  form), i.e. mass that mixes in zeros;
* ``spread``: exp(entropy) of the weights over the real keys, as a fraction of them (1 is
  uniform attention);
* ``spread*`` and ``tv*``: the same spread for the exact kernel the features estimate
  (softmax of q.k / d or / sqrt(d) over the real keys), and the total-variation distance
  between it and the weights (renormalised over real keys).

    python scripts/performer_attention_check.py RUN_DIR [RUN_DIR ...] --source text=../shared/data/imdb

A run directory holds ``config.json`` and ``checkpoint.pt`` (an unfinished run; finished
records keep no checkpoint). Data is prepared with the run's own data parameters unless
``--set K=V`` overrides one (e.g. ``--set n=2000`` for a small Pathfinder sample).
``--form key_max=head`` (or ``stabiliser=1e-6``) recomputes the weights of the same trained
layers with another feature form, the model's forward pass unchanged: it says which part of
the form flattens them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention_zoo.registry import HyperparameterError, make_hparams  # noqa: E402
from attention_zoo.performer import PerformerAttention  # noqa: E402
from lra.config import ConfigError, RunConfig, kv_pairs  # noqa: E402
from lra.train import build_model  # noqa: E402
from tasks import cache  # noqa: E402
from tasks.base import DataError  # noqa: E402


def layer_stats(attn: PerformerAttention, q, k, mask, explicit: int) -> dict[str, float]:
    """The statistics above for one layer's (B, H, L, D) q, k and (B, L) mask."""
    q, k = q.double(), k.double()
    phi_q, phi_k, counted = attn.query_key_features(q, k, mask)  # over the whole batch: key_max=batch sees it all
    phi_q, phi_k, real, counted = phi_q[:explicit], phi_k[:explicit], mask[:explicit], counted[:explicit]
    m = phi_k.shape[-1]
    w = phi_q @ phi_k.transpose(-1, -2)  # (b, H, L, L)
    w = w * counted[:, None, None, :]
    den = w.sum(-1, keepdim=True)
    a = w / den
    stab_feature = m ** -0.5 * attn.stabiliser  # each key feature's stabiliser part
    n_counted = counted.sum(-1).double()[:, None, None]  # (b, 1, 1)
    stab = (phi_q.sum(-1) * stab_feature * n_counted) / den[..., 0]  # (b, H, L)
    pad = (a * (~real)[:, None, None, :]).sum(-1)
    a_real = a * real[:, None, None, :]
    a_real = a_real / a_real.sum(-1, keepdim=True)
    n_real = real.sum(-1).double()[:, None, None]

    def spread(p):
        ent = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
        return torch.exp(ent) / n_real

    d = q.shape[-1]
    scale = d ** -1.0 if attn.qk_scale == "d" else d ** -0.5
    logits = (q[:explicit] @ k[:explicit].transpose(-1, -2)) * scale
    exact = torch.softmax(logits.masked_fill(~real[:, None, None, :], float("-inf")), dim=-1)
    tv = 0.5 * (a_real - exact).abs().sum(-1)
    qmask = real[:, None, :].expand_as(stab)

    def avg(x):
        return float(x[qmask].mean())

    return {"stab": avg(stab), "feat": avg(1 - stab), "pad": avg(pad), "spread": avg(spread(a_real)),
            "spread*": avg(spread(exact)), "tv*": avg(tv), "real_keys": float(real.sum(-1).double().mean())}


FORM_FIELDS = ("key_max", "stabiliser", "qk_scale", "padded_keys")  # what the feature map reads per call


def parse_form(form: dict[str, str]) -> dict[str, object]:
    """``--form`` strings typed and checked as ``--attention performer:K=V`` would be."""
    for key in form:
        if key not in FORM_FIELDS:
            raise SystemExit(f"--form: unknown field {key!r} (one of {', '.join(FORM_FIELDS)})")
    try:
        hp = make_hparams("performer", **form)
    except HyperparameterError as e:
        raise SystemExit(f"--form: {e}") from None
    return {key: getattr(hp, key) for key in form}


def with_form(attn: PerformerAttention, form: dict[str, object]) -> PerformerAttention:
    """A shallow copy of ``attn`` whose feature form has ``form``'s (parsed) fields instead."""
    other = copy.copy(attn)
    for key, value in form.items():
        setattr(other, key, value)
    return other


def check_run(run_dir: Path, sources: dict[str, str], sets: dict[str, str], explicit: int, batches: int,
              form: dict[str, str] | None = None) -> list[dict]:
    typed_form = parse_form(form or {})  # before any data is read
    if not (run_dir / "config.json").is_file():
        raise SystemExit(f"{run_dir}: no config.json (not a run directory)")
    if not (run_dir / "checkpoint.pt").is_file():
        raise SystemExit(f"{run_dir}: no checkpoint.pt (a finished run keeps no checkpoint)")
    cfg_d = json.loads((run_dir / "config.json").read_text())
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    keys = set(RunConfig.__dataclass_fields__)
    cfg = RunConfig.from_dict({k: v for k, v in cfg_d.items() if k in keys})
    data = cache.load(cfg.task, {**cfg.data, **sets}, sources.get(cfg.task, cfg.source))
    model = build_model(cfg, data)
    model.load_state_dict(ckpt["model"])
    model.eval()
    x, _ = data.split("val")
    captured: list = []
    originals = {}
    for mod in model.modules():
        if isinstance(mod, PerformerAttention):
            def attend(q, k, v, mask, _mod=mod):
                captured.append((_mod, q, k, v, mask))
                return originals[_mod](q, k, v, mask)
            originals[mod] = mod.attend
            mod.attend = attend
    rows = []
    bs = cfg.train.batch_size
    with torch.no_grad():
        for b in range(batches):
            tokens = torch.from_numpy(x[b * bs:(b + 1) * bs].astype("int64"))
            captured.clear()
            model(tokens)
            for layer, (mod, q, k, v, mask) in enumerate(captured):
                stats = layer_stats(with_form(mod, typed_form), q, k, mask, explicit)
                rows.append({"run": run_dir.name, "task": cfg.task, "step": ckpt["step"], "batch": b,
                             "layer": layer, "form": ",".join(f"{key}={val}" for key, val in (form or {}).items())
                             or "run's", **stats})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--source", action="append", default=[], help="TASK=PATH")
    p.add_argument("--set", action="append", default=[], help="data K=V override (numbers only)")
    p.add_argument("--explicit", type=int, default=2, help="examples whose L x L weights are written out")
    p.add_argument("--batches", type=int, default=1)
    p.add_argument("--form", action="append", default=[], help="feature form K=V for the analysis only")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.explicit < 1 or a.batches < 1:
        raise SystemExit("--explicit and --batches must be >= 1")
    rows = []
    try:
        sources, form, sets = kv_pairs(a.source, "--source"), kv_pairs(a.form, "--form"), kv_pairs(a.set, "--set")
        if any(not v.isdigit() for v in sets.values()):
            raise ConfigError(f"--set: integer values only, got {sets}")
        sets = {key: int(val) for key, val in sets.items()}
        for r in a.runs:
            rows += check_run(r, sources, sets, a.explicit, a.batches, form)
    except (DataError, ConfigError) as e:
        raise SystemExit(f"error: {e}") from None
    cols = ["task", "step", "form", "batch", "layer", "real_keys", "stab", "feat", "pad", "spread", "spread*", "tv*"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join((f"{row[c]:.1e}" if c == "feat" else f"{row[c]:.3f}") if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")
    if a.json:  # temp file then rename: never a half-written record
        tmp = a.json.with_name(a.json.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, a.json)


if __name__ == "__main__":
    main()
