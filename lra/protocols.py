"""Protocols as data: per-task presets of model, optimisation and data parameters.

``skyformer`` is the PyTorch protocol the PolaFormer LRA table follows (the default);
``nystromformer`` the Nyströmformer port's; ``lra`` the original JAX configs; ``quick``
a CPU-sized preset that trains in minutes. Numbers are LRA_SPEC §2.
"""

from __future__ import annotations

import copy
from typing import Any

from lra.config import ConfigError, ModelConfig, RunConfig, TrainConfig, apply_overrides, coerce
from tasks import get_task

_SKY_MODEL = dict(layers=2, dim=64, heads=2, ffn=128, dropout=0.1, pooling="mean", head_hidden=128)
_SKY_TRAIN = dict(steps=50000, schedule="onecycle", beta1=0.9, beta2=0.999, adam_eps=1e-6, weight_decay=0.0,
                  clip_value=1.0, best_after=0.2)
# The Skyformer code's model and checkpoint rule (session 10; results/reproduced/README.md, "What
# the protocol took from the Skyformer code"): the token embedding drawn from N(0, 0.02^2) like
# the positions (code/models/model_LRA.py), MEAN pooling over the whole padded length, and the
# best validation tracked from the first evaluation, weights kept after 20% of training only
# when they beat every earlier evaluation, else the final model tested (code/main.py).
# The nystromformer protocol keeps the earlier model: its code was not read for this.
_SKYFORMER_MODEL = {**_SKY_MODEL, "embed_std": 0.02, "pooling": "mean_padded"}
_SKYFORMER_TRAIN = {**_SKY_TRAIN, "best_rule": "overall"}
_SEQ = {"listops": 2000, "text": 4000, "retrieval": 4000, "image": 1024, "pathfinder": 1024}


def _sky(batch: int, lr: float, warmup: int, eval_every: int, eval_batches: int) -> dict[str, Any]:
    return dict(batch_size=batch, lr=lr, warmup=warmup, eval_every=eval_every, eval_batches=eval_batches)


PROTOCOLS: dict[str, dict[str, Any]] = {
    "skyformer": {
        "doc": "Skyformer PyTorch protocol (PolaFormer's LRA table): 2 layers, dim 64, 50k steps.",
        "model": _SKYFORMER_MODEL,
        "train": _SKYFORMER_TRAIN,
        # The Skyformer code's per-variant settings (code/config.py "extra_attn_config") where they
        # differ from the zoo's defaults: its Nystromformer has no convolution on v (the config
        # has no conv_kernel_size), its Performer draws rp_dim = 128 features and takes the
        # Nystromformer LRA wrapper's form (q.k / d, padded keys zeroed but counted, one key-side
        # max per batch, stabiliser 1e-4: attention_zoo/performer.py), its Linformer has
        # one projection E per head, shared by keys and values, which stays at its random init
        # (code/models/attention_linformer.py: ``nn.Parameter(...).to(device)`` is an unregistered
        # copy, so the optimizer never updates E). Its softmax attention has dropout 0.1 on the
        # attention weights (code/models/attention.py). Its Nystromformer takes landmarks over the
        # padded length and its Skyformer draws landmark positions as if padding were trailing,
        # both starting the pseudo-inverse from the batch's largest column sum
        # (code/models/attention_nystrom.py, attention_skyformer.py; attention_zoo docstrings).
        "attention": {"softmax": {"dropout": 0.1},
                      "nystromformer": {"conv_kernel": 0, "landmarks": "padded", "pinv_scope": "batch"},
                      "skyformer": {"sampling": "prefix", "pinv_scope": "batch"},
                      "performer": {"nb_features": 128, "qk_scale": "d", "key_max": "batch", "stabiliser": 1e-4,
                                    "padded_keys": True},
                      "linformer": {"share_kv": True, "per_head": True, "trainable": False}},
        "tasks": {
            # ListOps and Text padded to 2,048 and 4,096 as create_listops.py and create_text.py do
            # (the ListOps generator keeps sequences within 2,000 tokens, and Text is cut at 4,000
            # bytes, so only the padding grows: MEAN pooling divides by the padded length, and the
            # Performer's normaliser counts the padded keys).
            "listops": {"train": _sky(32, 1e-4, 1000, 500, 62), "data": {"seq_len": 2048}},
            "text": {"train": _sky(32, 1e-4, 80, 500, 200), "data": {"seq_len": 4000, "pad_to": 4096}},
            "retrieval": {"train": _sky(16, 2e-4, 800, 1000, 300), "data": {"seq_len": 4000, "pad_to": 4096}},
            "pathfinder": {"train": _sky(128, 2e-4, 312, 500, 156)},
            "image": {"train": _sky(256, 1e-4, 175, 50, 20)},
        },
    },
    "nystromformer": {
        "doc": "Nyströmformer's LRA port: the skyformer model, its own steps, batches and warm-up.",
        "model": _SKY_MODEL,
        "train": {**_SKY_TRAIN, "lr": 1e-4},
        "tasks": {
            "listops": {"train": dict(steps=5000, batch_size=32, warmup=1000, eval_every=500, eval_batches=62)},
            "text": {"train": dict(steps=20000, batch_size=32, warmup=8000, eval_every=500, eval_batches=200),
                     "data": {"seq_len": 4000}},
            "retrieval": {"train": dict(steps=30000, batch_size=32, warmup=800, eval_every=1000, eval_batches=300),
                          "data": {"seq_len": 4000}},
            "image": {"train": dict(steps=35000, batch_size=256, warmup=175, eval_every=500, eval_batches=20)},
            "pathfinder": {"train": dict(steps=62400, batch_size=256, warmup=312, eval_every=500, eval_batches=156)},
        },
    },
    "lra": {
        "doc": "The original LRA JAX configs (Adam 0.9/0.98/1e-9, decoupled weight decay, rsqrt or cosine "
               "schedules). The JAX image/pathfinder models' separate qkv width is not modelled: attention "
               "runs at the model width.",
        "model": dict(dropout=0.1),
        "train": dict(beta1=0.9, beta2=0.98, adam_eps=1e-9, clip_value=0.0, best_after=0.0, eval_batches=0),
        "tasks": {
            "listops": {"model": dict(layers=4, dim=512, heads=8, ffn=1024, head_hidden=1024, pooling="cls"),
                        "train": dict(batch_size=32, lr=0.05, schedule="rsqrt", warmup=1000, steps=5000,
                                      weight_decay=0.1, eval_every=500)},
            "text": {"model": dict(layers=4, dim=256, heads=4, ffn=1024, head_hidden=1024, pooling="cls"),
                     "train": dict(batch_size=32, lr=0.05, schedule="rsqrt", warmup=8000, steps=20000,
                                   weight_decay=0.1, eval_every=500),
                     "data": {"seq_len": 1000}},
            "retrieval": {"model": dict(layers=4, dim=128, heads=4, ffn=512, head_hidden=512, pooling="cls"),
                          "train": dict(batch_size=32, lr=0.05, schedule="rsqrt", warmup=8000, steps=5000,
                                        weight_decay=0.1, eval_every=500),
                          "data": {"seq_len": 4000}},
            "image": {"model": dict(layers=1, dim=128, heads=8, ffn=128, head_hidden=128, pooling="cls"),
                      "train": dict(batch_size=256, lr=5e-4, schedule="cosine", warmup=175, steps=35000,
                                    weight_decay=0.0, eval_every=1000)},
            "pathfinder": {"model": dict(layers=4, dim=32, heads=4, ffn=32, head_hidden=32, pooling="mean"),
                           "train": dict(batch_size=512, lr=1e-3, schedule="cosine", warmup=312, steps=62400,
                                         weight_decay=0.0, eval_every=1000)},
        },
    },
    "quick": {
        "doc": "CPU-sized preset: small generated/sliced data, short sequences, a few hundred steps.",
        "model": dict(layers=2, dim=64, heads=2, ffn=128, dropout=0.0, pooling="mean", head_hidden=128),
        "train": dict(steps=500, schedule="onecycle", lr=2e-3, warmup=50, eval_every=100, eval_batches=0,
                      beta1=0.9, beta2=0.999, adam_eps=1e-6, weight_decay=0.0, clip_value=1.0, best_after=0.2,
                      batch_size=32),
        "tasks": {
            "listops": {"data": dict(seq_len=128, min_length=16, max_length=128, n_train=4000, n_val=500,
                                     n_test=500)},
            "text": {"data": dict(seq_len=512, size=2000)},
            "retrieval": {"data": dict(seq_len=256, size=2000)},
            "image": {"data": dict(size=2000)},
            # 1024 tokens a row: fewer, smaller steps keep it to about a minute on 2 cores
            "pathfinder": {"data": dict(n=2500), "train": dict(steps=200, batch_size=16, eval_every=100)},
        },
    },
}


def protocol_names() -> list[str]:
    return sorted(PROTOCOLS)


def attention_defaults(protocol: str, attention: str) -> dict[str, Any]:
    """The protocol's hyperparameters for one variant (its reference code's settings), which
    a run's own ``variant:key=value`` ones override. Empty for an unknown protocol."""
    return dict(PROTOCOLS.get(protocol, {}).get("attention", {}).get(attention, {}))


def _variant_hp(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over ``defaults``; a given value equal to the default (``conv_kernel=0`` as the
    string from a spec) keeps the typed default, so spelling out the default is the same run."""
    hp = dict(defaults)
    for key, value in given.items():
        if key in defaults and coerce(value, type(defaults[key]), key) == defaults[key]:
            continue
        hp[key] = value
    return hp


def resolve(task: str, protocol: str, attention: str, attention_hp: dict[str, Any] | None = None,
            seed: int = 0, overrides: dict[str, Any] | None = None, source: str | None = None) -> RunConfig:
    """Protocol defaults, then its per-task entries, then ``--set`` overrides. The variant's
    hyperparameters are the protocol's for it (``attention_defaults``) under the given ones."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; valid: {', '.join(protocol_names())}")
    proto = PROTOCOLS[protocol]
    per_task = proto["tasks"].get(task)
    if per_task is None:
        raise ConfigError(f"protocol {protocol!r} has no entry for task {task!r}")
    model = ModelConfig(**{**proto.get("model", {}), **per_task.get("model", {})})
    model.attention = attention
    model.attention_hp = _variant_hp(attention_defaults(protocol, attention), attention_hp or {})
    train = TrainConfig(**{**proto.get("train", {}), **per_task.get("train", {})})
    data = dict(copy.deepcopy(per_task.get("data", {})))
    cfg = RunConfig(task=task, protocol=protocol, seed=seed, source=source, data=data, model=model, train=train)
    cfg = apply_overrides(cfg, overrides or {})
    cfg.data = get_task(task).typed(cfg.data)  # "6" from --set and 6 from a grid file are one run
    return cfg
