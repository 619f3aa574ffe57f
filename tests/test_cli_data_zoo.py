"""`lra data` and `lra zoo` from the command line."""

from click.testing import CliRunner

import attention_zoo
from cli import lra


def test_data_prepare_is_a_noop_the_second_time(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA", str(tmp_path))
    runner = CliRunner()
    args = ["data", "prepare", "listops", "--protocol", "quick", "--size", "60", "--no-progress"]
    first = runner.invoke(lra, args)
    assert first.exit_code == 0, first.output
    assert '"train": 60' in first.output and "seq_len 128" in first.output
    folder = first.output.split()[0]
    meta_mtime = (tmp_path / folder.split("/")[-1] / "meta.json").stat().st_mtime_ns
    second = runner.invoke(lra, args)
    assert second.exit_code == 0 and second.output.split()[0] == folder
    assert (tmp_path / folder.split("/")[-1] / "meta.json").stat().st_mtime_ns == meta_mtime
    info = runner.invoke(lra, ["data", "info"])
    assert info.exit_code == 0 and "listops" in info.output and folder in info.output


def test_data_prepare_missing_source_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA", str(tmp_path / "cache"))
    r = CliRunner().invoke(lra, ["data", "prepare", "text", "--source", str(tmp_path / "nope")])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and r.output.startswith("error: ") and "does not exist" in r.output
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_zoo_list_and_show():
    r = CliRunner().invoke(lra, ["zoo", "list"])
    assert r.exit_code == 0
    for name in attention_zoo.names():
        assert f"\n{name} " in "\n" + r.output
    r = CliRunner().invoke(lra, ["zoo", "show", "polarity"])
    assert r.exit_code == 0 and "alpha: float = 3.0" in r.output and "under --protocol" not in r.output
    r = CliRunner().invoke(lra, ["zoo", "show", "nystromformer"])
    assert r.exit_code == 0 and "conv_kernel: int = 35" in r.output
    assert "under --protocol skyformer: conv_kernel=0" in r.output
    r = CliRunner().invoke(lra, ["zoo", "show", "nope"])
    assert r.exit_code == 2 and "unknown attention 'nope'" in r.output


def test_sweep_dry_run_shows_the_plan_and_bad_input_is_one_line(tmp_path):
    runner = CliRunner()
    args = ["sweep", "--protocol", "quick", "--tasks", "listops,pathfinder", "--attention",
            "softmax,polarity:alpha=3,polarity:alpha=5", "--seeds", "0,1", "--out", str(tmp_path), "--dry-run",
            "--no-progress"]
    r = runner.invoke(lra, args)
    assert r.exit_code == 0, r.output
    assert "12 runs: 12 to run" in r.output and "polarity:alpha=5" in r.output
    assert not list(tmp_path.rglob("result.json"))
    r = runner.invoke(lra, ["sweep", "--tasks", "listops", "--attention", "nosuch", "--out", str(tmp_path)])
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1
