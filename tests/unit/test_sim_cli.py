"""``inferplex sim``: strict flags, and a tiny run that writes the results folder."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import add_arguments, parse_duration, parse_size, policies

ROOT = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferplex sim")
    add_arguments(p)
    return p


def test_sizes_and_durations_parse_with_their_units() -> None:
    assert parse_size("32GiB") == 32 * 2**30
    assert parse_size("16GB") == 16 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1.5GiB") == 3 * 2**29
    assert parse_duration("1h") == 3600 and parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("45") == 45


@pytest.mark.parametrize("text", ["32 gigs", "GiB", "-1GiB", "0GiB", "32GiBs", ""])
def test_a_bad_size_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="GiB|at least"):
        parse_size(text)


@pytest.mark.parametrize("text", ["1hour", "1h30m", "-5s", "0s", "fast", "1d"])
def test_a_bad_duration_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="90s|above 0"):
        parse_duration(text)


def test_policies_repeat_and_all_expands_in_order() -> None:
    assert policies(None) == ["inferplex"]
    assert policies(["lru", "static", "lru"]) == ["lru", "static"]
    assert policies(["all"]) == ["inferplex", "lru", "static"]


def test_bad_flags_exit_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--out", "x", "--instance-memory", "lots"], ["--out", "x", "--duration", "1 hour"],
                 ["--out", "x", "--policy", "fifo"], ["--out", "x", "--instances", "0"],
                 ["--models", "10"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(argv)
    err = capsys.readouterr().err
    assert "is not a size" in err and "is not a duration" in err and "invalid choice: 'fifo'" in err
    assert "must be above 0" in err and "--out" in err


def test_a_tiny_run_writes_results_md_and_the_plots(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "sim", "--models", "30", "--instances", "2",
         "--instance-memory", "2GiB", "--duration", "90s", "--rate", "30", "--policy", "all",
         "--seed", "3", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    md = (out / "results.md").read_text()
    assert "| | inferplex | lru | static |" in md and "SLO attainment, admitted" in md
    for png in ("slo_goodput.png", "memory.png", "cold_starts.png", "refusals.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "simulated" in proc.stderr  # the progress bar


def test_trace_dir_runs_the_real_trace_format_and_an_empty_one_says_what_to_point_at(tmp_path: Path) -> None:
    from controlplane.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no invocations_per_function_md.anon.dNN.csv files"):
        main(["sim", "--trace-dir", str(empty), "--out", str(tmp_path / "o1"), "--quiet"])
    trace = tmp_path / "trace"
    trace.mkdir()
    minutes = ",".join(str(m) for m in range(1, 4))
    lines = [f"HashOwner,HashApp,HashFunction,Trigger,{minutes}"]
    lines += [f"o{i % 2},a{i},f{i},http,{30 // (i + 1)},{20 // (i + 1)},{10 // (i + 1)}" for i in range(6)]
    (trace / "invocations_per_function_md.anon.d01.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "o2"
    assert main(["sim", "--trace-dir", str(trace), "--models", "6", "--instances", "1", "--duration", "3m",
                 "--out", str(out), "--quiet"]) == 0
    md = (out / "results.md").read_text()
    assert "| requests | 144 |" in md  # every invocation of the three minutes, none lost


def test_evict_margin_takes_a_number_or_none_and_refuses_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse_args(["--out", "x"]).evict_margin == 2.0
    assert _parser().parse_args(["--out", "x", "--evict-margin", "16"]).evict_margin == 16.0
    assert _parser().parse_args(["--out", "x", "--evict-margin", "None"]).evict_margin is None
    for bad in ("0.5", "lots"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["--out", "x", "--evict-margin", bad])
    err = capsys.readouterr().err
    assert "must be at least 1 (or none)" in err and "write a number >= 1, or none" in err
