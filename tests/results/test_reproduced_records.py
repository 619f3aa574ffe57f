"""The committed reproduction (results/reproduced/): complete records, and README tables that
are exactly what ``lra table`` prints from them (so the README cannot drift from the runs)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import lra
from lra.config import LEGACY_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
REPRO = ROOT / "results" / "reproduced"
RUNS = REPRO / "skyformer"
RESULTS = sorted(RUNS.glob("*/*/*/result.json"))
DIAGNOSTICS = REPRO / "diagnostics"
# What the protocol was before session 10 took the Skyformer code's model and checkpoint rule
# (lra/protocols.py): every diagnostic set recorded before then ("v1", the default) is today's
# command under these overrides, per run, per task and per variant.
V1_SET = {"model.embed_std": "none", "model.pooling": "mean", "train.best_rule": "after"}
V1_TASK_SET = {"listops": {"data.seq_len": "2000"}, "text": {"data.pad_to": "0"}}
V1_VARIANT = {"softmax": "softmax:dropout=0", "nystromformer": "nystromformer:landmarks=real,pinv_scope=matrix",
              "skyformer": "skyformer:sampling=real,pinv_scope=matrix"}
# diagnostics/<set>/<task>/<variant>/<run>/: runs that change one thing of the protocol. Per set:
# its README tables (task, variants, published tables, and which other set's runs are read
# beside it: only where the changed runs have their own variant label), the command's --set
# overrides, and what the change must look like in every record's config.
DIAGNOSTIC_SETS = {
    # the main table of sessions 1-9: the protocol before it took the Skyformer code's token
    # embedding init, MEAN pooling, checkpoint rule, softmax attention dropout and ListOps padding
    "protocol-v1": {"task": "listops,text,image,pathfinder", "compare": ["polaformer", "skyformer"],
                    "set": {}, "changes": {"model.pooling": "mean"}},
    "pathfinder-easy": {"task": "pathfinder", "variants": ["softmax,polarity:alpha=3"],
                        "set": {"data.contour_length": "6"}, "changes": {"data_resolved.contour_length": 6}},
    "pathfinder-nomask": {"task": "pathfinder", "variants": ["softmax,polarity:alpha=3"],
                          "set": {"mask_zero": "false"}, "changes": {"mask_zero": False}},
    "text-no-conv": {"task": "text", "variants": ["polarity:alpha=3,kernel_size=1", "polarity:alpha=3", "softmax"],
                     "with": "diagnostics/protocol-v1", "set": {}, "changes": {"model.attention_hp.kernel_size": "1"}},
    "image-attn-dropout": {"task": "image", "variants": ["softmax"], "compare": "skyformer", "with": "diagnostics/protocol-v1",
                           "set": {}, "changes": {"model.attention_hp.dropout": "0.1"}},
    # recorded before the protocol took the Skyformer code's fixed per-head projection (E, F
    # learned, one for all heads): the zoo's defaults, which today's command spells out
    "linformer-learned": {"task": "listops,text,image,pathfinder", "variants": ["linformer"], "compare": "skyformer",
                          "set": {}, "command": "linformer:share_kv=false,per_head=false,trainable=true",
                          "changes": {"model.attention_hp": {}}},
    # recorded before the protocol took the Skyformer code's Performer form (q.k / d, padded keys
    # counted, one key-side max per batch, stabiliser 1e-4): the paper's FAVOR+ with 128 features
    "performer-favor": {"task": "listops,text,image,pathfinder", "variants": ["performer"], "compare": "skyformer",
                        "set": {}, "command": "performer:qk_scale=sqrt_d,key_max=head,stabiliser=1e-6,padded_keys=false",
                        "changes": {"model.attention_hp": {"nb_features": 128}}},
    # sessions 13-15, today's protocol: one of the Skyformer code's Performer changes undone per
    # run, or all four (FAVOR+, "all_changes"), its table beside the main table's ListOps performer
    "performer-form": {"task": "listops",
                       "variants": ["performer,performer:qk_scale=sqrt_d,performer:key_max=head,performer:stabiliser=1e-6,"
                                    "performer:padded_keys=false,"
                                    "performer:key_max=head,padded_keys=false,qk_scale=sqrt_d,stabiliser=1e-6"],
                       "compare": "skyformer", "with": "skyformer", "v1": False, "set": {},
                       "changes": {"model.attention": "performer"}, "one_change": True,
                       "all_changes": "performer:key_max=head,padded_keys=false,qk_scale=sqrt_d,stabiliser=1e-6"},
    # sessions 17-19, today's protocol: Text polarity with one of the Skyformer code's changes
    # undone (the token embedding's N(0, 1) init, a=3, 5 and 7, and softmax beside them; MEAN
    # pooling over real tokens only; no padding past the 4,000 tokens)
    "text-embed-init": {"task": "text", "variants": ["softmax,polarity:alpha=3,polarity:alpha=5,polarity:alpha=7"],
                        "v1": False,
                        "set": {"model.embed_std": "none"}, "changes": {"model.embed_std": None}},
    "text-mean-pooling": {"task": "text", "variants": ["polarity:alpha=3"], "v1": False,
                          "set": {"model.pooling": "mean"}, "changes": {"model.pooling": "mean"}},
    "text-unpadded": {"task": "text", "variants": ["polarity:alpha=3"], "v1": False,
                      "set": {"data.pad_to": "0"}, "changes": {"data.pad_to": 0}},
}
DIAG_RESULTS = sorted(DIAGNOSTICS.glob("*/*/*/*/result.json"))


def same_computation(now, cfg: dict) -> bool:
    """Today's resolution ``now`` and a record's ``cfg`` are one computation: equal but for how
    the attention hyperparameters are spelled ("0.1" as given on the command line, 0.1 as a
    protocol default) and data overrides that resolve to the task's same data (seq_len 2000
    given, or the protocol's 2000), checked on the data the record says it was prepared on
    (``data_resolved``), not only on the overrides it asked for. The record adds its hash and data
    folder."""
    import copy

    from attention_zoo import make_hparams
    from tasks import get_task

    today, rec = now.to_dict(), {k: copy.deepcopy(v) for k, v in cfg.items() if k in now.to_dict()}
    name = today["model"]["attention"]
    if make_hparams(name, **today["model"].pop("attention_hp")) != make_hparams(name, **rec["model"].pop("attention_hp")):
        return False
    rec.pop("data")
    task = get_task(today["task"])
    # a data parameter added after the record was made is at its default there (Text's pad_to 0)
    prepared = {**task.params(), **cfg["data_resolved"]}
    return task.params(today.pop("data")) == prepared and today == rec


def test_there_are_records():
    assert len(RESULTS) >= 4
    assert {p.relative_to(RUNS).parts[0] for p in RESULTS} <= {"listops", "text", "image", "pathfinder"}
    assert {p.relative_to(DIAGNOSTICS).parts[0] for p in DIAG_RESULTS} == set(DIAGNOSTIC_SETS)


@pytest.mark.parametrize("result", RESULTS + DIAG_RESULTS,
                         ids=[str(p.parent.relative_to(REPRO)) for p in RESULTS + DIAG_RESULTS])
def test_record_is_a_full_finished_skyformer_run(result):
    run = result.parent
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl", "result.json"]
    r = json.loads(result.read_text())
    cfg = json.loads((run / "config.json").read_text())
    assert r["status"] == "finished" and r["protocol"] == "skyformer" == cfg["protocol"]
    assert r["steps"] == cfg["train"]["steps"] == 50000
    assert r["config_hash"] == run.name.rsplit("-", 1)[-1]
    assert 0.0 <= r["test_acc"] <= 1.0 and r["env"]["device"].startswith("NVIDIA")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 50000
    threshold = cfg["train"]["best_after"] * r["steps"]
    early = [m["val_acc"] for m in metrics if m["step"] <= threshold]
    late = [m["val_acc"] for m in metrics if m["step"] > threshold]
    if cfg["train"].get("best_rule", "after") == "after":  # the best validation from 20% of training on
        eligible = [m["val_acc"] for m in metrics if m["step"] >= threshold]
        assert r["best_step"] >= threshold and max(eligible) == pytest.approx(r["best_val_acc"])
    elif r["best_step"] is None:  # overall: no evaluation after 20% beat the earlier peak, the final model tested
        assert max(late) <= max(early)
    else:  # overall: the peak of the whole run, reached after 20% of training
        assert r["best_step"] > threshold and max(late) > max(early)
        assert max(late) == pytest.approx(r["best_val_acc"])


@pytest.mark.parametrize("result", RESULTS, ids=[str(p.parent.relative_to(REPRO)) for p in RESULTS])
def test_main_table_record_is_the_protocols_current_config(result):
    """A cell of the main table is the run ``lra run TASK --attention VARIANT --protocol skyformer``
    makes today: re-resolving its variant label gives its config hash (a record made under
    other settings, such as a zoo default the protocol has since overridden, fails here)."""
    from lra.sweep import resolve_run

    r = json.loads(result.read_text())
    cfg = json.loads((result.parent / "config.json").read_text())
    now = resolve_run(r["task"], r["variant"], "skyformer", r["seed"], {}, cfg["source"])
    assert same_computation(now, cfg)
    assert now.variant_label() == r["variant"]


@pytest.mark.parametrize("compare", ["polaformer", "skyformer"])
def test_readme_tables_are_what_lra_table_prints(compare):
    r = CliRunner().invoke(lra, ["table", "--runs", str(RUNS), "--protocol", "skyformer", "--compare", compare,
                                 "--order", "polaformer", "--times"])
    assert r.exit_code == 0, r.output
    table = [line for line in r.output.splitlines() if line.startswith("|")]
    readme = (REPRO / "README.md").read_text()
    assert "\n".join(table) in readme, f"results/reproduced/README.md is out of date for --compare {compare}"


# Runs whose training loss ended well above its lowest (lra.records.train_loss_rise), by folder
# ("skyformer" for the main table, else the diagnostic set), each explained in the README by
# the phrase given here.
UNSTABLE = {("performer-favor", "listops", "performer"): "**ListOps performer** stops improving",
            ("performer-form", "listops", "performer:stabiliser=1e-6"): "learns ListOps, then loses it",
            ("performer-form", "listops", "performer:key_max=head,padded_keys=false,qk_scale=sqrt_d,stabiliser=1e-6"):
                "loses ListOps twice"}


def test_unstable_runs_are_the_ones_the_readme_explains():
    from lra.records import LOSS_RISE_UNSTABLE, load_runs

    folders = {"skyformer": RUNS, **{d: DIAGNOSTICS / d for d in DIAGNOSTIC_SETS}}
    found = {(name, r["task"], r["variant"]) for name, runs in folders.items() for r in load_runs(runs)
             if (r["train_loss_rise"] or 0) > LOSS_RISE_UNSTABLE}
    assert found == set(UNSTABLE)
    readme = (REPRO / "README.md").read_text()
    assert all(phrase in readme for phrase in UNSTABLE.values())
    # the note under each table with a flagged cell: both main tables, or the set's one table
    notes = sum(2 if name == "skyformer" else 1 for name in {k[0] for k in UNSTABLE})
    assert readme.count("‡: a run whose training loss ended more than") == notes


@pytest.mark.parametrize("result", DIAG_RESULTS, ids=[str(p.parent.relative_to(DIAGNOSTICS)) for p in DIAG_RESULTS])
def test_diagnostic_record_changes_what_its_set_says(result):
    from lra.sweep import resolve_run

    r = json.loads(result.read_text())
    cfg = json.loads((result.parent / "config.json").read_text())
    diag = DIAGNOSTIC_SETS[result.relative_to(DIAGNOSTICS).parts[0]]
    assert r["task"] in diag["task"].split(",")
    for dotted, value in diag["changes"].items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        # a config leaves out a key at its legacy default, so that older records keep their hashes
        legacy = LEGACY_DEFAULTS.get(parents[0], {}) if parents else {}
        assert leaf in node or leaf in legacy
        assert node.get(leaf, legacy.get(leaf)) == value
    if diag.get("one_change"):  # one attention hyperparameter differs from the protocol's, or all_changes' all
        protocol_hp = resolve_run(r["task"], cfg["model"]["attention"], "skyformer", r["seed"], {}, cfg["source"])
        ours, theirs = cfg["model"]["attention_hp"], protocol_hp.to_dict()["model"]["attention_hp"]
        changed = {k for k in set(ours) | set(theirs) if str(ours.get(k)) != str(theirs.get(k))}
        if r["variant"] == diag.get("all_changes"):
            assert changed == {kv.split("=")[0] for kv in r["variant"].split(":", 1)[1].split(",")}
        else:
            assert len(changed) == 1
    if "mask_zero" not in diag["changes"]:
        assert cfg["mask_zero"] is None  # the task's default (LRA's mask on)
    # the README's command for the set (variant label plus its --set overrides; for a set recorded
    # before session 10, under the earlier protocol's overrides too) makes this record
    spec, sets = diag.get("command", r["variant"]), dict(diag["set"])
    if diag.get("v1", True):
        spec, sets = V1_VARIANT.get(spec, spec), {**V1_SET, **V1_TASK_SET.get(r["task"], {}), **sets}
    now = resolve_run(r["task"], spec, "skyformer", r["seed"], sets, cfg["source"])
    assert same_computation(now, cfg)
    today = resolve_run(r["task"], spec, "skyformer", r["seed"], dict(diag["set"]), cfg["source"])
    assert not same_computation(today, cfg) or not diag.get("v1", True)  # the earlier protocol's runs are not today's


@pytest.mark.parametrize("diag", sorted(DIAGNOSTIC_SETS))
def test_readme_diagnostic_tables_are_what_lra_table_prints(diag):
    d = DIAGNOSTIC_SETS[diag]
    compares = d.get("compare", "polaformer")
    for compare in [compares] if isinstance(compares, str) else compares:
        args = ["table", "--runs", str(DIAGNOSTICS / diag)] + (["--runs", str(REPRO / d["with"])] if "with" in d else [])
        args += ["--protocol", "skyformer", "--compare", compare, "--order", "polaformer", "--task", d["task"], "--times"]
        for variant in d.get("variants", []):
            args += ["--variant", variant]
        r = CliRunner().invoke(lra, args)
        assert r.exit_code == 0, r.output
        table = [line for line in r.output.splitlines() if line.startswith("|")]
        assert "\n".join(table) in (REPRO / "README.md").read_text(), \
            f"README table for diagnostics/{diag} (--compare {compare}) is out of date"


# unfinished/<task>/<variant>/<run>/: runs stopped by the end of a session's device time whose
# checkpoint may not survive to the next session, kept for their validation curve only
UNFINISHED = sorted(p.parent for p in (REPRO / "unfinished").glob("*/*/*/metrics.jsonl"))


@pytest.mark.parametrize("run", UNFINISHED, ids=[str(p.relative_to(REPRO)) for p in UNFINISHED])
def test_unfinished_run_is_a_protocol_run_that_never_enters_a_table(run):
    from dataclasses import fields

    from lra.config import RunConfig
    from lra.sweep import resolve_run

    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl"]  # no result: never a cell
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["protocol"] == "skyformer" and cfg["config_hash"] == run.name.rsplit("-", 1)[-1]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] < cfg["train"]["steps"] == 50000
    # the config is the one its hash (and folder) names; the command the README gives for it is
    # its variant label (the attention with the hyperparameters that differ from the
    # protocol's), under no other override
    rec = RunConfig.from_dict({f.name: cfg[f.name] for f in fields(RunConfig) if f.name in cfg})
    assert rec.hash() == cfg["config_hash"]
    spec = rec.variant_label()
    assert same_computation(resolve_run(cfg["task"], spec, "skyformer", cfg["seed"], {}, cfg["source"]), cfg)
    assert f"unfinished/{run.relative_to(REPRO / 'unfinished')}" in (REPRO / "README.md").read_text()
