"""``render_table`` against numbers recomputed here from the result.json files of real
quick-protocol runs (``quick_records``), in markdown, LaTeX and CSV; the published
tables against LRA_SPEC §3-4."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import statistics
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from lra.records import load_runs
from results import published
from results.table import or_list, render_table, run_times, records_frame

ROOT = Path(__file__).resolve().parents[2]
# LRA_SPEC §3, copied by hand (not read from the CSVs under test)
POLAFORMER = {"softmax": {"text": 61.55, "listops": 38.71, "retrieval": 80.93, "pathfinder": 70.39, "image": 39.14,
                          "avg": 58.14},
              "polarity:alpha=3": {"text": 73.06, "listops": 37.35, "retrieval": 80.50, "pathfinder": 70.53,
                                   "image": 42.15, "avg": 60.72}}
LRA_TRANSFORMER = {"listops": 36.37, "text": 64.27, "retrieval": 57.46, "image": 42.44, "pathfinder": 71.40,
                   "avg": 54.39}
TOL = 0.005 + 1e-9  # two decimals as printed


def expected(root: Path) -> dict[tuple[str, str], dict]:
    """(variant, task) -> mean, std, n, wall times: straight from the result.json files."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(root.rglob("result.json")):
        r = json.loads(path.read_text())
        if r["status"] == "finished":
            groups.setdefault((r["variant"], r["task"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        accs = [100 * r["test_acc"] for r in rs]
        walls = [r["wall_seconds"] for r in rs]
        out[key] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else None,
                    "n": len({r["seed"] for r in rs}), "wall_sum": sum(walls), "wall_mean": statistics.mean(walls)}
    return out


def averages(exp: dict) -> dict[str, tuple[float, list[str]]]:
    """variant -> (average of its task means, the tasks behind it)."""
    by_variant: dict[str, dict[str, float]] = {}
    for (variant, task), e in exp.items():
        by_variant.setdefault(variant, {})[task] = e["mean"]
    return {v: (statistics.mean(m.values()), sorted(m)) for v, m in by_variant.items()}


def md_rows(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    cells = [[c.strip() for c in l.strip().strip("|").split("|")] for l in lines]
    assert len({len(c) for c in cells}) == 1, "every markdown row has the header's number of cells"
    assert all(set(c) <= set("-:") for c in cells[1])
    return cells[0], cells[2:]


MD_CELL = re.compile(r"^(?P<bold>\*\*)?(?P<mean>\d+\.\d+)(?:\*\*)?(?: ± (?P<std>\d+\.\d+))? \((?P<n>\d+)\)(?P<mixed>†)?(?P<unstable>‡)?(?P<final>§)?$")
TEX_CELL = re.compile(r"^(?P<bold>\\textbf\{)?(?P<mean>\d+\.\d+)\}?(?: \$\\pm\$ (?P<std>\d+\.\d+))? \((?P<n>\d+)\)$")


def check_cell(cell: str, e: dict, pattern: re.Pattern) -> re.Match:
    m = pattern.match(cell)
    assert m, cell
    assert abs(float(m["mean"]) - e["mean"]) <= TOL, (cell, e)
    assert int(m["n"]) == e["n"], (cell, e)
    if e["std"] is None:
        assert m["std"] is None, cell
    else:
        assert abs(float(m["std"]) - e["std"]) <= TOL, (cell, e)
    return m


def test_fixture_is_real_quick_runs(quick_records):
    results = [json.loads(p.read_text()) for p in quick_records.rglob("result.json")]
    assert len(results) == 9
    assert {r["protocol"] for r in results} == {"quick"} and {r["status"] for r in results} == {"finished"}
    assert {(r["variant"], r["task"]) for r in results} == {
        (v, t) for v in ("softmax", "polarity:alpha=3") for t in ("listops", "pathfinder")} | {("softmax_naive", "listops")}
    for path in quick_records.rglob("result.json"):
        assert (path.parent / "config.json").exists() and (path.parent / "metrics.jsonl").exists()
    # the seeds must disagree somewhere, or the std checks below check nothing
    assert any(e["std"] for e in expected(quick_records).values())


def test_markdown_means_stds_seeds_and_average(quick_records):
    exp = expected(quick_records)
    text = render_table(load_runs(quick_records))
    header, rows = md_rows(text)
    assert header == ["variant", "listops", "pathfinder", "avg"]
    assert [r[0] for r in rows] == ["softmax", "softmax_naive", "polarity:alpha=3"]
    avgs = averages(exp)
    for row in rows:
        variant = row[0]
        for task, cell in zip(header[1:3], row[1:3]):
            if (variant, task) in exp:
                check_cell(cell, exp[(variant, task)], MD_CELL)
            else:
                assert cell == "—"
        avg, tasks = avgs[variant]
        assert row[3].endswith("*"), "no row has all five tasks: every average is marked"
        assert abs(float(row[3].strip("*")) - avg) <= TOL
    assert "avg*: average over the available tasks only (1 or 2 of 5)." in text
    assert [or_list(c) for c in ([4], [1, 4], [1, 2, 3, 4])] == ["4", "1 or 4", "1, 2, 3 or 4"]
    # bold: exactly the best (as printed) of every column
    for j, task in ((1, "listops"), (2, "pathfinder")):
        best = max(round(e["mean"], 2) for (v, t), e in exp.items() if t == task)
        for row in rows:
            m = MD_CELL.match(row[j])
            if m:
                assert bool(m["bold"]) == (round(float(m["mean"]), 2) == best), row[j]
    best_avg = max(round(a, 2) for a, _ in avgs.values())
    assert sum(r[3].startswith("**") for r in rows) == sum(round(a, 2) == best_avg for a, _ in avgs.values())


@pytest.mark.parametrize("order, columns", [
    ("lra", ["listops", "text", "retrieval", "image", "pathfinder"]),
    ("polaformer", ["text", "listops", "retrieval", "pathfinder", "image"]),
])
def test_task_order(quick_records, order, columns):
    header, _ = md_rows(render_table(load_runs(quick_records), order=order, compare="lra"))
    assert [h for h in header if h in columns] == columns
    assert header[3:13:2] == columns and header[4:14:2] == [f"Δ {c}" for c in columns]


def test_compare_polaformer_deltas(quick_records):
    exp = expected(quick_records)
    avgs = averages(exp)
    text = render_table(load_runs(quick_records), compare="polaformer", order="polaformer")
    header, rows = md_rows(text)
    assert header[:3] == ["variant", "protocol", "source"]
    ours = {r[0]: dict(zip(header, r)) for r in rows if r[2] == "ours"}
    theirs = [dict(zip(header, r)) for r in rows if r[2] != "ours"]
    assert len(theirs) == 11 and all(r["protocol"] == "skyformer" for r in theirs)
    assert {r["source"] for r in theirs} >= {"polaformer: Transformer", "polaformer: PolaFormer a=3"}
    pola3 = next(r for r in theirs if r["variant"] == "polarity:alpha=3")
    assert pola3["text"] == "**73.06**" and pola3["avg"] == "**60.72**" and pola3["Δ text"] == ""
    # softmax_naive computes softmax attention: compared with the Transformer row
    for variant, ref in (("softmax", "softmax"), ("softmax_naive", "softmax"), ("polarity:alpha=3", "polarity:alpha=3")):
        row = ours[variant]
        for task in ("text", "listops", "retrieval", "pathfinder", "image"):
            if (variant, task) in exp:
                assert abs(float(row[f"Δ {task}"]) - (exp[(variant, task)]["mean"] - POLAFORMER[ref][task])) <= TOL
            else:
                assert row[f"Δ {task}"] == "—"
        avg, tasks = avgs[variant]
        ref_avg = statistics.mean(POLAFORMER[ref][t] for t in tasks)  # over the same tasks
        assert row["Δ avg"].endswith("*")
        assert abs(float(row["Δ avg"].rstrip("*")) - (avg - ref_avg)) <= TOL
    assert "Published protocol: skyformer; ours: quick." in text


def test_compare_without_a_published_match(quick_records):
    _, rows = md_rows(render_table(load_runs(quick_records), compare="lra", variants=["polarity"]))
    ours = [r for r in rows if r[2] == "ours"]
    assert [r[0] for r in ours] == ["polarity:alpha=3"]
    assert all(c == "—" for c in ours[0][4:14:2]), "LRA Table 1 has no polarity row"
    assert not [r for r in rows if r[2] != "ours"], "the variant filter applies to the published rows"


def test_latex_structure_and_values(quick_records):
    exp = expected(quick_records)
    tex = render_table(load_runs(quick_records), compare="lra", fmt="latex")
    lines = tex.splitlines()
    spec = re.match(r"\\begin\{tabular\}\{(.*)\}$", lines[0])
    assert spec, lines[0]
    n_cols = len(spec[1].replace("@{}", ""))
    assert re.fullmatch(r"[lr]+", spec[1].replace("@{}", ""))
    top, bottom = lines.index("\\toprule"), lines.index("\\bottomrule")
    assert lines[bottom + 1] == "\\end{tabular}" and lines.count("\\midrule") == 2
    body = [l for l in lines[top + 1:bottom] if l != "\\midrule"]
    assert len(body) == 1 + 3 + 11  # header, ours, LRA Table 1
    for line in body:
        assert line.endswith(" \\\\")
        assert len(re.split(r"(?<!\\)&", line)) == n_cols, line
    assert re.search(r"(?<!\\)_", tex) is None, "underscores are escaped"
    assert "softmax\\_naive" in tex and "$$" not in tex and "(\\%)" in tex
    assert tex.count("{") == tex.count("}")
    cells = {l.split(" & ")[0]: [c.strip() for c in re.split(r"(?<!\\)&", l.removesuffix(" \\\\"))]
             for l in body[1:4]}
    head = [c.strip() for c in re.split(r"(?<!\\)&", body[0].removesuffix(" \\\\"))]
    assert head[:5] == ["Variant", "Protocol", "Source", "ListOps", "$\\Delta$"]
    for variant, row in cells.items():
        name = variant.replace("\\_", "_")
        for task, j in (("listops", head.index("ListOps")), ("pathfinder", head.index("Pathfinder"))):
            if (name, task) in exp:
                check_cell(row[j], exp[(name, task)], TEX_CELL)
                if name.startswith("softmax"):
                    delta = float(row[j + 1].strip("$"))
                    assert abs(delta - (exp[(name, task)]["mean"] - LRA_TRANSFORMER[task])) <= TOL
                else:
                    assert row[j + 1] == "--", "LRA Table 1 has no polarity row"
            else:
                assert row[j] == "--"
    line = {l.split(" & ")[2]: l for l in body[4:]}
    assert "\\textbf" not in line["lra: Transformer"]
    assert "\\textbf{37.27}" in line["lra: Reformer"] and "\\textbf{55.01}" in line["lra: BigBird"]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(quick_records, tmp_path):
    tex = render_table(load_runs(quick_records), compare="polaformer", fmt="latex", times=True)
    tabular, notes = tex.split("\\end{tabular}")
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs,graphicx}\n"
                   "\\begin{document}\n\\begin{table}\n\\resizebox{\\textwidth}{!}{" + tabular + "\\end{tabular}}"
                   + notes + "\n\\end{table}\n\\end{document}\n")
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]


def test_csv_numbers(quick_records):
    exp = expected(quick_records)
    avgs = averages(exp)
    text = render_table(load_runs(quick_records), compare="polaformer", fmt="csv", times=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3 + 11
    ours = {r["variant"]: r for r in rows if r["source"] == "ours"}
    for (variant, task), e in exp.items():
        r = ours[variant]
        assert abs(float(r[task]) - e["mean"]) < 1e-4
        assert int(r[f"{task}_n"]) == e["n"]
        assert (r[f"{task}_std"] == "") if e["std"] is None else abs(float(r[f"{task}_std"]) - e["std"]) < 1e-4
        ref = POLAFORMER["softmax" if variant.startswith("softmax") else variant][task]
        assert abs(float(r[f"{task}_delta"]) - (e["mean"] - ref)) < 1e-4
    for variant, (avg, tasks) in avgs.items():
        assert abs(float(ours[variant]["avg"]) - avg) < 1e-4 and int(ours[variant]["avg_tasks"]) == len(tasks)
    for variant in ours:  # times: sums and means of wall_seconds over the row's runs
        walls = [json.loads(p.read_text())["wall_seconds"] for p in quick_records.rglob("result.json")
                 if json.loads(p.read_text())["variant"] == variant]
        assert int(ours[variant]["runs"]) == len(walls)
        assert abs(float(ours[variant]["compute_seconds"]) - sum(walls)) < 1e-3
        assert abs(float(ours[variant]["wall_seconds_mean"]) - statistics.mean(walls)) < 1e-3
    pola3 = next(r for r in rows if r["source"] == "polaformer" and r["variant"] == "polarity:alpha=3")
    assert pola3["model"] == "PolaFormer a=3" and float(pola3["text"]) == 73.06 and pola3["text_std"] == ""


def test_times_columns_and_helper(quick_records):
    exp = expected(quick_records)
    header, rows = md_rows(render_table(load_runs(quick_records), times=True))
    assert header[-2:] == ["wall/run", "compute"]
    assert all(re.fullmatch(r"\d+\.\d(s|min|h)", c) for r in rows for c in r[-2:])
    per_task = run_times(records_frame(load_runs(quick_records)), by_task=True)
    for (variant, task), e in exp.items():
        t = per_task.loc[(variant, "quick", task)]
        assert abs(t.compute_seconds - e["wall_sum"]) < 1e-6 and abs(t.wall_seconds_mean - e["wall_mean"]) < 1e-6


def test_packed_runs_count_their_share_of_the_gpu(quick_records, tmp_path):
    """A run packed with others on a GPU (runs_per_device k) adds wall/k to its row's compute,
    and the row says how many of its runs were shared; other rows are unchanged."""
    root = tmp_path / "runs"
    shutil.copytree(quick_records, root)
    path = next(p for p in sorted(root.rglob("result.json")) if json.loads(p.read_text())["variant"] == "softmax")
    rec = json.loads(path.read_text())
    rec["runs_per_device"], rec["device_seconds"] = 4, rec["wall_seconds"] / 4
    path.write_text(json.dumps(rec))
    exp = expected(root)
    times, unshared = run_times(records_frame(load_runs(root))), run_times(records_frame(load_runs(quick_records)))
    for variant in {v for v, _ in exp}:
        walls = sum(e["wall_sum"] for (v, _), e in exp.items() if v == variant)
        want = walls - 0.75 * rec["wall_seconds"] if variant == "softmax" else walls
        t = times.loc[(variant, "quick")]
        assert abs(t.compute_seconds - want) < 1e-3 and int(t.shared_runs) == (variant == "softmax")
        assert t.wall_seconds_mean == unshared.loc[(variant, "quick")].wall_seconds_mean  # wall/run: as measured
    text = render_table(load_runs(root), times=True)
    _, rows = md_rows(text)
    compute = {r[0]: r[-1] for r in rows}
    assert compute["softmax"].endswith(" (1 shared)") and "shared" not in compute["polarity:alpha=3"]
    assert "(k shared): k of the row's runs shared their GPU" in text
    assert "shared" not in render_table(load_runs(quick_records), times=True)
    csv_rows = {r["variant"]: r for r in csv.DictReader(io.StringIO(render_table(load_runs(root), times=True,
                                                                                  fmt="csv")))}
    assert csv_rows["softmax"]["shared_runs"] == "1" and csv_rows["polarity:alpha=3"]["shared_runs"] == "0"
    # Packed, then resumed alone: the last segment's runs_per_device is 1, the run still counts as shared.
    path = next(p for p in sorted(root.rglob("result.json"))
                if json.loads(p.read_text())["variant"] == "polarity:alpha=3")
    rec = json.loads(path.read_text())
    rec["runs_per_device"], rec["device_seconds"] = 1, 0.6 * rec["wall_seconds"]
    path.write_text(json.dumps(rec))
    assert int(run_times(records_frame(load_runs(root))).loc[("polarity:alpha=3", "quick")].shared_runs) == 1


def test_filters(quick_records):
    runs = load_runs(quick_records)
    header, rows = md_rows(render_table(runs, tasks=["pathfinder"]))
    assert header == ["variant", "pathfinder", "avg"] and {r[0] for r in rows} == {"softmax", "polarity:alpha=3"}
    header, rows = md_rows(render_table(runs, variants=["softmax"]))
    assert [r[0] for r in rows] == ["softmax"], "a full label does not select softmax_naive"
    _, rows = md_rows(render_table(runs, variants=["polarity:alpha=3", "softmax_naive"], protocol="quick"))
    assert [r[0] for r in rows] == ["softmax_naive", "polarity:alpha=3"]
    with pytest.raises(ValueError, match="no finished runs"):
        render_table(runs, protocol="skyformer")
    for kwargs, message in (({"fmt": "html"}, "unknown format"), ({"order": "abc"}, "unknown task order"),
                            ({"compare": "nope"}, "unknown published table"), ({"tasks": ["path-x"]}, "unknown task")):
        with pytest.raises(ValueError, match=message):
            render_table(runs, **kwargs)


def test_unfinished_duplicated_and_mixed_runs(quick_records, tmp_path):
    """Edited copies of the real records: a diverged run is left out and counted in the
    notes, a record folder copied twice is one run, a different config is flagged."""
    root = tmp_path / "runs"
    shutil.copytree(quick_records, root)
    exp = expected(quick_records)
    dirs = sorted(p.parent for p in root.glob("listops/polarity-alpha3/*/result.json"))
    shutil.copytree(root / "listops" / "softmax", root / "machine2" / "listops" / "softmax")  # merged from another machine
    res_path = dirs[0] / "result.json"
    res = json.loads(res_path.read_text())
    res_path.write_text(json.dumps({**res, "status": "diverged: non-finite training loss at step 10",
                                    "test_acc": None, "best_val_acc": None}))
    mixed = root / "listops" / "softmax" / "other-setting"
    shutil.copytree(next((root / "listops" / "softmax").iterdir()), mixed)
    res = json.loads((mixed / "result.json").read_text())
    cfg = json.loads((mixed / "config.json").read_text())
    cfg["train"]["steps"], cfg["seed"], cfg["config_hash"] = 40, 7, "differentcfg"
    (mixed / "config.json").write_text(json.dumps(cfg))
    (mixed / "result.json").write_text(json.dumps({**res, "seed": 7, "config_hash": "differentcfg"}))

    text = render_table(load_runs(root))
    _, rows = md_rows(text)
    cells = {r[0]: r for r in rows}
    assert cells["softmax"][1].endswith("(3)†") and "(n)†: these runs differ in configuration" in text
    assert cells["softmax"][2].endswith(f"({exp[('softmax', 'pathfinder')]['n']})"), "duplicates count once"
    assert cells["polarity:alpha=3"][1].endswith("(1)")
    assert "Not counted: 1 run(s) that did not finish (diverged: non-finite training loss at step 10)." in text


def test_hyperparameter_spelling_is_not_another_setting(quick_records, tmp_path):
    """Seeds of one setting whose records spell an attention hyperparameter differently ("0.1"
    from the command line, 0.1 as a protocol default) are averaged unmarked; another value is
    another setting (†)."""
    root = tmp_path / "runs"
    shutil.copytree(quick_records, root)
    runs = sorted(p.parent for p in root.glob("listops/softmax/*/result.json"))
    assert len(runs) >= 2
    for run, value in zip(runs, ["0.1", 0.1]):
        cfg = json.loads((run / "config.json").read_text())
        cfg["model"]["attention_hp"] = {"dropout": value}
        (run / "config.json").write_text(json.dumps(cfg))
    _, rows = md_rows(render_table(load_runs(root)))
    assert not {r[0]: r for r in rows}["softmax"][1].endswith("†")
    cfg = json.loads((runs[0] / "config.json").read_text())
    cfg["model"]["attention_hp"] = {"dropout": "0.2"}
    (runs[0] / "config.json").write_text(json.dumps(cfg))
    _, rows = md_rows(render_table(load_runs(root)))
    assert {r[0]: r for r in rows}["softmax"][1].endswith("†")


def test_complete_average_is_unmarked(quick_records):
    """The five tasks present: the real listops records relabelled in memory as each task."""
    runs = [r for r in load_runs(quick_records) if r["task"] == "listops" and r["variant"] == "softmax"]
    five = [{**r, "task": t, "config_hash": f"{r['config_hash']}-{t}"}
            for t in ("listops", "text", "retrieval", "image", "pathfinder") for r in runs]
    mean = statistics.mean(100 * r["test_acc"] for r in runs)
    header, rows = md_rows(render_table(five, compare="lra"))
    row = dict(zip(header, rows[0]))
    assert row["avg"] == f"{mean:.2f}" and not row["avg"].endswith("*")
    assert abs(float(row["Δ avg"]) - (mean - LRA_TRANSFORMER["avg"])) <= TOL, "against the average as printed"


# ---- published tables


@pytest.mark.parametrize("name, n_rows, order", [
    ("lra", 11, ["listops", "text", "retrieval", "image", "pathfinder"]),
    ("polaformer", 11, ["text", "listops", "retrieval", "pathfinder", "image"]),
    ("skyformer", 9, ["text", "listops", "retrieval", "pathfinder", "image"]),
    ("nystromformer", 3, ["listops", "text", "retrieval", "image", "pathfinder"]),
    ("skyformer_hours", 3, ["text", "listops", "retrieval", "pathfinder", "image"]),
])
def test_published_tables_load(name, n_rows, order):
    import attention_zoo

    frame = published.load(name)
    has_avg = name != "skyformer_hours"
    assert list(frame.columns) == ["model", "variant", "protocol", *order, *(["avg"] if has_avg else [])]
    assert len(frame) == n_rows and published.source_order(name) == order
    assert frame[order].notna().all().all() and frame.variant.is_unique
    assert set(frame.protocol) == {published.SOURCES[name].protocol}
    for label in frame.variant:  # every mapped variant exists in the zoo with those hyperparameters
        spec, hp = attention_zoo.parse_spec(label)
        attention_zoo.make_hparams(spec, **hp)
    raw = published.read_raw(name)
    assert raw.attrs["citation"] == published.SOURCES[name].citation
    assert [c.lower() for c in raw.columns[3:]] == [*order, *(["avg"] if has_avg else [])]
    if has_avg:  # the printed average agrees with the printed tasks, bar one known slip in LRA Table 1
        off = frame[(frame[order].mean(axis=1) - frame.avg).abs() > 0.005 + 1e-9]
        assert list(off.model) == (["Sinkhorn Trans."] if name == "lra" else [])


def test_published_spot_values():
    def value(name, model, column):
        f = published.load(name)
        return float(f.loc[f.model == model, column].item())

    assert value("polaformer", "PolaFormer a=3", "text") == 73.06
    assert value("polaformer", "Hedgehog", "pathfinder") == 74.16
    assert value("lra", "Transformer", "listops") == 36.37
    assert value("lra", "BigBird", "avg") == 55.01
    assert value("skyformer", "Reformer", "image") == 48.87
    assert value("skyformer_hours", "Self-Attention", "retrieval") == 8.33
    assert value("nystromformer", "Nyströmformer", "image") == 41.58
    assert value("nystromformer", "Standard", "pathfinder") == 74.16
    speed = published.load_speed()
    assert len(speed) == 12 and sorted(set(speed.length)) == [1024, 2048, 3072, 4096]
    t4k = speed[(speed.variant == "softmax") & (speed.length == 4096)].iloc[0]
    assert (t4k.steps_per_s, t4k.memory_gb) == (1.4, 9.48)
    p4k = speed[(speed.variant == "performer") & (speed.length == 4096)].iloc[0]
    assert p4k.steps_per_s == 8.0 and p4k.speed_rel == pytest.approx(8.0 / 1.4)
    assert list(published.read_raw("lra_speed").columns[3:]) == [
        *(f"steps_per_s_{k}K" for k in range(1, 5)), *(f"memory_GB_{k}K" for k in range(1, 5))]


def test_published_files_ship_with_the_package():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["results"]
    for src in published.SOURCES.values():
        assert src.path.exists()
        assert any(fnmatch(f"published/{src.file}", g) for g in globs), src.file
    assert set(published.COMPARE) <= set(published.SOURCES)


def test_variant_matching():
    pola = published.load("polaformer").variant
    assert published.match_variant("polarity", pola) == "polarity:alpha=3"  # alpha=3 is the default
    assert published.match_variant("polarity:alpha=5,backend=torch", pola) == "polarity:alpha=5"
    assert published.match_variant("polarity:alpha=4", pola) is None
    assert published.match_variant("polarity:alpha=3,kernel_size=3", pola) is None
    assert published.match_variant("softmax_naive", pola) == "softmax"
    assert published.match_variant("not_a_variant:x=1", pola) is None


def edited_listops_softmax(quick_records, tmp_path, edit) -> Path:
    """A copy of the real records with ``edit(run_dir)`` applied to one listops softmax seed."""
    root = tmp_path / "runs"
    shutil.copytree(quick_records, root)
    edit(sorted(p.parent for p in root.glob("listops/softmax/*/result.json"))[0])
    return root


def assert_only_that_cell_is_marked(root, quick_records, group: str, marker: str, note: str, latex_marker: str,
                                    csv_column: str) -> None:
    """The edited listops softmax cell, and only it, carries ``marker`` in markdown (as regex
    group ``group``), LaTeX and CSV, with its note; its accuracy is still the mean over seeds;
    the unedited records carry no marker."""
    text = render_table(load_runs(root))
    _, md = md_rows(text)
    cells = {r[0]: r for r in md}
    m = check_cell(cells["softmax"][1], expected(quick_records)[("softmax", "listops")], MD_CELL)
    assert m[group] == marker and note in text
    assert [c for r in md for c in r if marker in c] == [cells["softmax"][1]], "only the edited run's cell"
    assert marker not in render_table(load_runs(quick_records)), "the real quick runs are not marked"
    latex = render_table(load_runs(root), fmt="latex")
    assert f"(2){latex_marker}" in latex and latex.count(latex_marker) == 2  # the cell and its note
    by_variant = {r["variant"]: r for r in csv.DictReader(io.StringIO(render_table(load_runs(root), fmt="csv")))}
    assert by_variant["softmax"][f"listops_{csv_column}"] == "True"
    assert by_variant["softmax"][f"pathfinder_{csv_column}"] == "False"


def test_a_run_whose_training_loss_rose_marks_its_cell(quick_records, tmp_path):
    """One listops softmax seed gets a training loss that climbs over its last logs (a late
    collapse): its cell is marked ‡."""
    def collapse(run):
        rows = [{"step": 10 * i, "train_loss": 1.0 if i <= 15 else 2.0} for i in range(1, 21)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    root = edited_listops_softmax(quick_records, tmp_path, collapse)
    assert_only_that_cell_is_marked(root, quick_records, "unstable", "‡",
                                    "‡: a run whose training loss ended more than 0.1 above its lowest",
                                    "$^{\\ddagger}$", "unstable")


def test_a_run_that_tested_its_final_model_marks_its_cell(quick_records, tmp_path):
    """One listops softmax seed kept no checkpoint (``best_step`` None: train.best_rule=overall
    and no later evaluation beat an early peak): its cell is marked §."""
    def no_checkpoint(run):
        r = json.loads((run / "result.json").read_text())
        (run / "result.json").write_text(json.dumps({**r, "best_step": None, "best_val_acc": None}))

    root = edited_listops_softmax(quick_records, tmp_path, no_checkpoint)
    assert_only_that_cell_is_marked(root, quick_records, "final", "§",
                                    "§: no validation after train.best_after (20% of training under skyformer) beat an earlier one",
                                    "$^{\\S}$", "final")
