"""Figures from the records of real quick-protocol runs (``quick_records``) and a real,
tiny speed benchmark; the attention matrices against independent computations and
against the modules' own forward passes."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image

import attention_zoo
from attention_zoo.linear import merge_heads
from lra import bench, records
from results import plots


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = bench.speed(["softmax", "polarity:alpha=3"], lengths=[64, 128], batch_size=2,
                           device=torch.device("cpu"), warmup=1, repeat=2, progress=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("bench") / "speed.json"
    records.write_json_atomic(path, {"kind": "speed", "env": records.environment(), "rows": rows})
    return path


@pytest.fixture(scope="module")
def figures(quick_records, bench_json, tmp_path_factory) -> tuple[Path, list[Path], list[str]]:
    out = tmp_path_factory.mktemp("figures")
    notes: list[str] = []
    # published="polaformer": markers drawn although the quick protocol has no published table
    return out, plots.plot_all(quick_records, out, [bench_json], published="polaformer", note=notes.append), notes


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _pixels_of(img: np.ndarray, color: str) -> int:
    want = (np.array(to_rgb(color)) * 255).round().astype(np.uint8)
    return int((img == want).all(-1).sum())


def test_every_figure_is_written(figures):
    out, paths, notes = figures
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in plots.FIGURES for e in ("png", "pdf"))
    for p in paths:
        assert p.parent == out and p.stat().st_size > 0
        if p.suffix == ".png":
            with Image.open(p) as im:
                im.load()  # decodes the whole image
                assert im.width > 300 and im.height > 200
        else:
            blob = p.read_bytes()
            assert blob.startswith(b"%PDF")
            assert b"/FontType 3" not in blob and b"/Type3" not in blob  # pdf.fonttype 42: TrueType text
    assert not [n for n in notes if n.startswith("skip")], notes


def test_missing_data_skips_with_a_note(quick_records, tmp_path):
    notes: list[str] = []
    assert plots.plot_all(quick_records, tmp_path / "a", None, only=["bubble", "speed"], note=notes.append) == []
    assert [n.split(":")[0] for n in notes] == ["skip bubble", "skip speed"]
    notes.clear()
    figures = [f for f in plots.FIGURES if f != "attention_maps"]  # that one finds a prepared cache
    assert plots.plot_all(tmp_path / "no-runs", tmp_path / "b", None, only=figures, note=notes.append) == []
    assert [n.split(":")[0] for n in notes] == [f"skip {f}" for f in figures]
    with pytest.raises(ValueError, match="unknown figure"):
        plots.plot_all(quick_records, tmp_path / "c", only="pie")


def test_same_variant_same_colour_across_figures(figures, quick_records):
    out, _, _ = figures
    accuracy, speed, curves = _rgb(out / "accuracy.png"), _rgb(out / "speed.png"), _rgb(out / "curves.png")
    pol, naive = plots.variant_color("polarity:alpha=3"), plots.variant_color("softmax_naive")
    # The fixture's polarity runs (alpha=3) and the bench's polarity rows share one colour in
    # every figure; solid bars and line centres give thousands of exact pixels, while
    # anti-aliased text and edges hit a given colour by chance only a few dozen times.
    for img in (accuracy, speed, curves):
        assert _pixels_of(img, pol) > 1000
        assert _pixels_of(img, plots.variant_color("linear")) < 200  # no linear runs or rows
    assert _pixels_of(accuracy, naive) > 1000 and _pixels_of(curves, naive) > 1000
    assert _pixels_of(speed, naive) < 200  # softmax_naive has runs but no speed rows
    # a label is coloured by the function it computes, not by how it is spelled or run
    assert plots.variant_color("polarity") == pol == plots.variant_color("polarity:alpha=3.0,backend=torch")
    labels = ["softmax", "softmax_naive", "linear", "polarity:alpha=3", "polarity:alpha=5", "polarity:alpha=7",
              *attention_zoo.names()]
    distinct = {plots.variant_color(v) for v in dict.fromkeys(labels) if v != "polarity"}
    assert len(distinct) == len({v for v in dict.fromkeys(labels) if v != "polarity"})


def test_hyperparameter_variants_draw_distinct_lines():
    # qk_scale=sqrt_d and key_max=head are the zoo's defaults, but the skyformer protocol sets
    # other values, so spelling them out names another computation than plain "performer"
    form = ["performer", "performer:qk_scale=sqrt_d", "performer:key_max=head", "performer:stabiliser=1e-6",
            "performer:qk_scale=sqrt_d,key_max=head,stabiliser=1e-6,padded_keys=false"]
    assert all(plots.variant_color(v) != plots.variant_color("performer") for v in form[1:])
    looks = plots.line_looks(form + ["softmax"])
    styles, markers = {v: look[0] for v, look in looks.items()}, {v: look[1] for v, look in looks.items()}
    assert len({(plots.variant_color(v), markers[v], styles[v]) for v in form}) == len(form)
    assert styles["performer"] == "-"  # the first of a look keeps its own style
    # one attention's variants share its marker, so each after the first takes one of its own
    assert markers["performer"] == plots.variant_marker("performer") and markers["softmax"] == "o"
    assert len(set(markers.values())) == len(form) + 1
    # variants whose shades coincide would still draw one line without the marker: they differ in style too
    same_shade = [v for v in form if plots.variant_color(v) == plots.variant_color(form[1])]
    assert len({styles[v] for v in same_shade}) == len(same_shade)
    handles = plots._variant_handles(form, "line")
    assert [(h.get_linestyle(), h.get_marker()) for h in handles] == [looks[v] for v in form]
    assert plots.line_looks(["softmax", "linear"]) == {"softmax": ("-", "o"), "linear": ("-", "s")}
    # softmax_naive stays dashed (and takes a marker of its own beside softmax's)
    naive = plots.line_looks(["softmax", "softmax_naive", "linear"])
    assert naive["softmax"] == ("-", "o") and naive["softmax_naive"][0] == "--" and naive["softmax_naive"][1] != "o"
    # a key no protocol sets is still a change only when it differs from the zoo's default
    assert plots.variant_color("cosformer:eps=1e-6") == plots.variant_color("cosformer")


def test_published_markers_match_variants():
    points, source = plots.published_points("skyformer", "polaformer")
    assert source == "polaformer" and points[("polarity:alpha=3", "listops")] == 37.35
    assert plots.published_points("skyformer", "auto")[1] == "polaformer"
    assert plots.published_points("quick", "auto") == ({}, "")  # no published table for the quick protocol
    labels = {v for v, _ in points}
    # matched by the function computed: softmax_naive is the published Transformer (softmax)
    assert plots._match_published("softmax_naive", labels) == "softmax"
    assert plots._match_published("polarity", labels) == "polarity:alpha=3"
    assert plots._match_published("polarity:alpha=5,backend=torch", labels) == "polarity:alpha=5"
    assert plots._match_published("linear", labels) is None


def _layer_input(name: str, length: int = 37, dim: int = 64, heads: int = 2, **hp):
    torch.manual_seed(0)
    attn = attention_zoo.build(name, dim, heads, length, **hp).double().eval()
    with torch.no_grad():  # away from zero init, so every parameter matters
        for p in attn.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, length, dim, dtype=torch.float64)  # float64: the checks below are exact to 1e-9
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length - 9:] = False  # padded keys in the second sequence
    return attn, x, mask


def test_softmax_map_and_entropy_match_an_independent_computation():
    attn, x, mask = _layer_input("softmax")
    a = plots.attention_matrix(attn, x, mask)  # (B, H, L, L)
    w = attn.qkv.weight.detach().double().numpy()
    bias = attn.qkv.bias.detach().double().numpy()
    for b in range(2):
        qkv = x[b].detach().numpy() @ w.T + bias  # (L, 3C)
        for h in range(2):
            q, k = qkv[:, h * 32:(h + 1) * 32], qkv[:, 64 + h * 32:64 + (h + 1) * 32]
            real = mask[b].numpy()
            s = q @ k[real].T / math.sqrt(32)
            p = np.exp(s - s.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            np.testing.assert_allclose(a[b, h][:, real].numpy(), p, rtol=1e-10, atol=1e-12)
            assert float(a[b, h][:, ~real].abs().sum()) == 0.0
            ent = -(p * np.log(p)).sum(1)
            np.testing.assert_allclose(plots.row_entropy(a[b, h], mask[b]).numpy(), ent, rtol=1e-10)
    # the map is what the layer applies: proj(A V) is the module's output
    v = attn.qkv(x).view(2, 37, 3, 2, 32).permute(2, 0, 3, 1, 4)[2]
    out = attn.proj(merge_heads(a @ v))
    torch.testing.assert_close(out, attn(x, mask), rtol=1e-9, atol=1e-10)
    # entropy edge cases: a one-hot row has 0, a uniform row ln n
    eye = torch.eye(5, dtype=torch.float64)
    assert plots.row_entropy(eye).abs().max() == 0
    assert torch.allclose(plots.row_entropy(torch.full((3, 8), 1 / 8, dtype=torch.float64)),
                          torch.full((3,), math.log(8), dtype=torch.float64))


def test_linear_map_rows_sum_to_one_and_reproduce_the_layer():
    attn, x, mask = _layer_input("linear")
    a = plots.attention_matrix(attn, x, mask)
    sums = a.sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-5)
    assert (a >= 0).all() and float(a[1][..., ~mask[1]].abs().max()) == 0.0
    v = attn.qkv(x).chunk(3, dim=-1)[2].view(2, 37, 2, 32).transpose(1, 2)
    out = attn.proj(merge_heads(a @ v))
    torch.testing.assert_close(out, attn(x, mask), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("alpha", [3.0, 7.0])
def test_polarity_map_rows_sum_to_one_and_reproduce_x_sim(alpha, monkeypatch):
    attn, x, mask = _layer_input("polarity", alpha=alpha, backend="torch")
    a = plots.attention_matrix(attn, x, mask)
    sums = a.sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-4)
    assert (a >= 0).all() and float(a[1][..., ~mask[1]].abs().max()) == 0.0
    seen = {}
    import attention_zoo.polarity as pol_module

    real_fn = pol_module.polarity_attention

    def spy(q, k, v, power, **kw):
        seen["v"], seen["o"] = v, real_fn(q, k, v, power, **kw)
        return seen["o"]

    monkeypatch.setattr(pol_module, "polarity_attention", spy)
    with torch.no_grad():
        attn(x, mask)
    d = seen["v"].shape[-1]
    x_sim = a @ seen["v"][..., : d // 2]  # the same-sign half of the output
    torch.testing.assert_close(x_sim, seen["o"][..., : d // 2], rtol=1e-9, atol=1e-10)


def test_attention_maps_on_a_real_input(quick_records, tmp_path):
    runs = records.load_runs(quick_records)
    tokens, task, vocab, desc = plots.example_tokens(runs)
    assert task == "listops" and tokens.dtype == torch.int64 and (tokens > 0).any()
    # a run that left weights beside its record is used, trained, for its variant
    src = next(r for r in runs if r["task"] == "listops" and r["variant"] == "polarity:alpha=3")
    root = tmp_path / "runs"
    shutil.copytree(src["dir"], root / "run")
    fresh, how = plots._model_for("polarity:alpha=3", task, runs, vocab, len(tokens), 1, None)
    last, _ = plots._model_for("polarity:alpha=3", task, runs, vocab, len(tokens), 2, None)
    assert how.startswith("untrained")
    # lra.checkpoint's layout: last weights under "model", the best-validation ones under best.state
    torch.save({"model": last.state_dict(), "step": 20,
                "best": {"acc": 0.5, "step": 10, "state": fresh.state_dict()}}, root / "run" / "checkpoint.pt")
    copied = records.load_runs(root)
    model, how = plots._model_for("polarity", task, copied, vocab, len(tokens), 0, None)
    assert how == "trained (seed 0, best-val step 10)"
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    a, m = plots.first_layer_maps(model, tokens)
    real = int((tokens > 0).sum())
    assert a.shape == (len(tokens), len(tokens)) and int(m.sum()) == real
    torch.testing.assert_close(a[m].sum(-1), torch.ones(real, dtype=a.dtype), rtol=0, atol=1e-4)
    png, pdf = plots.plot_attention_maps(tokens, tmp_path / "fig", task=task, runs=copied, vocab_size=vocab,
                                         input_note=desc, max_shown=16, shared_scale=False)
    assert _rgb(png).shape[0] > 200 and pdf.read_bytes().startswith(b"%PDF")
