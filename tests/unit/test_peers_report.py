"""The peers report's judgements, on results made up to sit on either side of each target:
sustainable goodput (the highest load served ≥ 99% within SLO), no collapse past the knee,
admitted attainment, light-load p50; a system that failed is a row with its error."""

from __future__ import annotations

from bench.peers import runner
from bench.peers.__main__ import markdown, sustainable_rps, targets


def _level(offered: float, goodput: float, attainment: float, admitted: float, p50: float) -> runner.LevelResult:
    summary = {"p50_ms": p50, "p99_ms": 2 * p50, "p999_ms": 3 * p50, "quota": 0, "infeasible": 3, "dropped": 0,
               "other": 0, "transport": 1, "timeout": 0, "not_sent": 0}
    return runner.LevelResult(offered / 100, offered, 10.0, summary, {}, {}, {"cold starts": 2.0}, 2**30, goodput,
                              attainment, admitted)


def _system(name: str, levels: list[runner.LevelResult], error: str | None = None) -> runner.SystemResult:
    return runner.SystemResult(name, f"{name} label", {"knob": "value"}, {"eviction": "yes"}, {"m": "ok"}, 1.0,
                               None, levels, error)


def _spec() -> runner.Spec:
    return runner.Spec("/m", "1", 1, 2**28, "0", 400.0, [0.25, 1.0, 2.0], 20.0, 10.0, 0.25, 7, 1.0, "/w")


def test_sustainable_goodput_is_the_highest_load_served_99_percent_within_slo() -> None:
    r = _system("x", [_level(100, 99.5, 0.995, 0.999, 5), _level(200, 190, 0.95, 0.99, 8), _level(300, 290, 0.991, 1, 9)])
    assert sustainable_rps(r) == 300  # not monotone: the highest level that met it
    assert sustainable_rps(_system("y", [_level(100, 50, 0.5, 0.9, 5)])) == 0.0


def test_targets_met_and_missed() -> None:
    ours = _system("inferplex", [_level(100, 99.5, 0.995, 0.9995, 4), _level(400, 396, 0.99, 0.9991, 6),
                                 _level(800, 380, 0.475, 0.9992, 7)])
    peer = _system("ray", [_level(100, 99.2, 0.992, 0.992, 5), _level(400, 100, 0.25, 0.25, 90),
                           _level(800, 10, 0.01, 0.01, 900)])
    lines = "\n".join(targets([ours, peer]))
    assert "inferplex 400 req/s, best peer ray label 100 req/s -> 4.00x: **met**" in lines
    assert "inferplex keeps 96%: **met**; peers keep ray 10%" in lines
    assert "worst 99.91%: **met**" in lines
    assert "inferplex 4.0 ms, best peer 5.0 ms: **met**" in lines

    slow = _system("inferplex", [_level(100, 90, 0.9, 0.99, 6)])
    lines = "\n".join(targets([slow, peer]))
    assert "inferplex serves no level ≥ 99% within SLO" in lines and "**missed**" in lines
    assert "worst 99.00%: **missed**" in lines and "6.0 ms, best peer 5.0 ms: **missed**" in lines
    # nobody sustains 99% (most models cold): the target is missed, not met by 0/0; peak goodput compared
    never = _system("ray", [_level(100, 60, 0.6, 0.6, 5), _level(400, 30, 0.075, 0.075, 90)])
    lines = "\n".join(targets([slow, never]))
    assert "inferplex serves no level ≥ 99% within SLO (best peer ray label: 0 req/s): **missed**" in lines
    assert "peak goodput: inferplex 90.0 req/s at 100 offered, best peer ray label 60.0 req/s at 100 offered -> 1.50x" in lines


def test_a_failed_peer_is_a_row_and_no_comparison_is_made_without_one() -> None:
    ours = _system("inferplex", [_level(100, 99.5, 0.995, 0.9995, 4)])
    broken = _system("torchserve", [], error="RuntimeError: the frontend did not start")
    assert targets([ours, broken]) == ["- no peer completed a run: the comparisons are not made (see each "
                                       "system's error)."]
    text = markdown([ours, broken], _spec(), [], {"ceiling_rps": 1000.0}, "python -m bench.peers", "today")
    assert "| torchserve label | - |" in text and "the frontend did not start" in text
    assert "| inferplex label | 100 | 99.5 | 99.5% | 100.0% | 4.0 | 8.0 | 12.0 | 3 | 1 | 2 | 1024 |" in text
    assert "- knob: value" in text
