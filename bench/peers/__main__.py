"""inferplex against the systems users would pick instead: the same models, CPUs, memory
and seeded trace, one system at a time (``python -m bench.peers``).

    .venv/bin/python -m bench.peers                       # every system, the full trace
    .venv/bin/python -m bench.peers --systems inferplex   # some of them

Writes ``bench/results/peers.md`` (per system and offered load: goodput, attainment, p50,
p99, p99.9, refusals, errors, cold starts, peak memory; every setting; the capability
table; the targets) and ``peers_goodput.png`` / ``peers_p99.png`` (one line per system),
plus ``peers.json`` with everything measured. The driver's own ceiling is measured first
against a stub server that answers at once, on the same CPUs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench._common import pyplot
from bench.peers import registry, runner
from bench.peers import workload as wl
from bench.peers.base import CAPABILITIES, REPO, start, stop
from tests.support.procs import free_port

RESULTS = REPO / "bench" / "results"
DEFAULT_LEVELS = (0.25, 0.5, 1.0, 1.5, 2.0)
SUSTAINED = 0.99  # "sustainable": the highest offered load served this much within SLO


# ---------------------------------------------------------------- the driver's ceiling

_STUB = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(body=b"\\0" * 16)
app = web.Application(client_max_size=1 << 26)
app.router.add_post("/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def driver_ceiling(server_cpus: str, driver_cpus: str, rates: tuple[float, ...] = (500, 1000, 2000, 4000),
                   duration_s: float = 4.0) -> dict[str, float]:
    """The highest rate the driver sends on time (p99 lateness ≤ 5 ms, nothing unsent)
    to a stub that answers at once: the raw-bytes client, the one the peers without v2
    use (tritonclient.http.aio is measured the same way in the gateway overhead bench)."""
    port = free_port()
    work = RESULTS.parent / ".peers" / "stub"
    proc = start(["taskset", "-c", server_cpus, sys.executable, "-c", _STUB, str(port)], work / "stub.log")
    out: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)  # polling until the stub listens
        script = (f"from bench import loadgen; import json, sys; loadgen.pin_driver({driver_cpus!r});"
                  "x = __import__('numpy').zeros((1, 256), 'float32');"
                  "rate = float(sys.argv[1]);"
                  f"s = loadgen.Stream('t', 'm', [i / rate for i in range(int(rate * {duration_s}))], {{'IN': x}},"
                  f"'127.0.0.1:{port}/p/{{model}}', name='m', kind=loadgen.ClientKind.BYTES);"
                  f"r = loadgen.run([s], duration_s={duration_s}); m = loadgen.summarize(r.records, 1000.0, {duration_s});"
                  "print(json.dumps({'sent': m.sent, 'offered': m.offered, 'ok': m.ok, 'late': m.lateness_p99_ms}))")
        for rate in rates:
            res = subprocess.run([sys.executable, "-c", script, str(rate)], capture_output=True, text=True,
                                 cwd=REPO, timeout=120, check=False)
            if res.returncode != 0:
                out[f"error at {rate:g}/s"] = 1.0
                break
            m = json.loads(res.stdout.strip().splitlines()[-1])
            on_time = m["sent"] == m["offered"] and m["ok"] == m["offered"] and (m["late"] or 0.0) <= 5.0
            out[f"{rate:g}/s"] = 1.0 if on_time else 0.0
            if on_time:
                out["ceiling_rps"] = rate
            else:
                break
    finally:
        stop(proc)
    return out


# ---------------------------------------------------------------- the report


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def sustainable_rps(res: runner.SystemResult) -> float:
    """The highest offered load served ≥ 99% within SLO (refusals count as misses)."""
    ok = [lv.offered_rps for lv in res.levels if (lv.attainment or 0.0) >= SUSTAINED]
    return max(ok, default=0.0)


def knee(res: runner.SystemResult) -> runner.LevelResult | None:
    return max(res.levels, key=lambda lv: lv.goodput_rps, default=None)


def targets(results: list[runner.SystemResult]) -> list[str]:
    ours = next((r for r in results if r.system == "inferplex" and r.error is None), None)
    peers = [r for r in results if r.system != "inferplex" and r.error is None and r.levels]
    if ours is None or not ours.levels:
        return ["- inferplex did not complete: no target can be judged."]
    if not peers:
        return ["- no peer completed a run: the comparisons are not made (see each system's error)."]
    lines = []
    best = max(peers, key=sustainable_rps)
    s_ours, s_best = sustainable_rps(ours), sustainable_rps(best)
    if s_ours <= 0:
        lines.append(f"- sustainable goodput ≥ 2x the best peer's: inferplex serves no level ≥ "
                     f"{100 * SUSTAINED:.0f}% within SLO (best peer {best.label}: {s_best:.0f} req/s): **missed**")
    else:
        ratio = s_ours / s_best if s_best > 0 else float("inf")
        lines.append(f"- sustainable goodput ≥ 2x the best peer's: inferplex {s_ours:.0f} req/s, best peer "
                     f"{best.label} {s_best:.0f} req/s -> {ratio:.2f}x: **{'met' if ratio >= 2 else 'missed'}**")
    k = knee(ours)
    best_peak = max(peers, key=lambda r: knee(r).goodput_rps if knee(r) is not None else 0.0)
    bk = knee(best_peak)
    if k is not None and bk is not None and bk.goodput_rps > 0:
        lines.append(f"- (not a target) peak goodput: inferplex {k.goodput_rps:.1f} req/s at {k.offered_rps:.0f} offered, "
                     f"best peer {best_peak.label} {bk.goodput_rps:.1f} req/s at {bk.offered_rps:.0f} offered -> "
                     f"{k.goodput_rps / bk.goodput_rps:.2f}x")
    top = max(ours.levels, key=lambda lv: lv.offered_rps)
    if k is not None and k.goodput_rps > 0:
        kept = top.goodput_rps / k.goodput_rps
        lines.append(f"- no collapse (goodput at the highest load ≥ 90% of the knee's): inferplex keeps "
                     f"{100 * kept:.0f}%: **{'met' if kept >= 0.9 else 'missed'}**; peers keep "
                     + ", ".join(f"{r.system} {100 * max(r.levels, key=lambda lv: lv.offered_rps).goodput_rps / max(knee(r).goodput_rps, 1e-9):.0f}%"  # noqa: E501
                                 for r in peers if knee(r) is not None))
    adm = [lv.admitted_attainment for lv in ours.levels if lv.admitted_attainment is not None]
    worst = min(adm, default=None)
    lines.append(f"- attainment of admitted requests ≥ 99.9% at every load: worst "
                 f"{'-' if worst is None else f'{100 * worst:.2f}%'}: "
                 f"**{'met' if worst is not None and worst >= 0.999 else 'missed'}**")
    light = ours.levels[0].summary["p50_ms"]
    best_light = min((r.levels[0].summary["p50_ms"] for r in peers if r.levels[0].summary["p50_ms"] is not None),
                     default=None)
    met = light is not None and best_light is not None and light <= best_light
    lines.append(f"- light-load p50 no worse than the best peer's: inferplex {_ms(light)} ms, best peer "
                 f"{_ms(best_light)} ms: **{'met' if met else 'missed'}**")
    return lines


def markdown(results: list[runner.SystemResult], spec: runner.Spec, models: list, ceiling: dict[str, float],
             command: str, started: str) -> str:
    slos = [m.slo_ms for m in models] or [0.0]
    out = ["# inferplex against the systems users would pick instead", "",
           f"Run {started} on {platform.node()} ({os.cpu_count()} CPUs, {platform.platform()}), "
           f"Python {platform.python_version()}.", "", f"Command: `{command}`", "",
           f"{len(models)} models ({', '.join(sorted({m.kind for m in models}))}; ONNX and TorchScript twins of the "
           f"same weights), SLOs {min(slos):g}-{max(slos):g} ms; "
           f"servers on CPU {spec.cpus} with {spec.threads} intra-op thread, driver on CPU {spec.driver_cpus}; "
           f"model memory {spec.model_memory_bytes / 2**20:.0f} MiB for every system (about a third of the models "
           f"fit); capacity {spec.capacity_rps:.0f} req/s (1 / mean execute time over the trace's mix); levels "
           f"{', '.join(f'{f:g}x' for f in spec.levels)} of it, {spec.level_s:g} s each after a "
           f"{spec.warmup_s:g} s warm-up; Zipf s={spec.zipf_s:g} with a popularity shift half-way, every third "
           f"model on/off bursty, the others Poisson; seed {spec.seed}.", "",
           f"Driver ceiling (raw-bytes client against a stub that answers at once): "
           f"{ceiling.get('ceiling_rps', 0):.0f} req/s on time ({json.dumps(ceiling)}).", "",
           "## Results", "",
           "| system | offered req/s | goodput req/s | within SLO | admitted within SLO | p50 ms | p99 ms | "
           "p99.9 ms | refused | errors | cold starts | peak memory (PSS) MiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error is not None and not r.levels:
            out.append(f"| {r.label} | - | - | - | - | - | - | - | - | - | - | {r.error[:120]} |")
            continue
        for lv in r.levels:
            s = lv.summary
            refused = s["quota"] + s["infeasible"]
            errors = s["dropped"] + s["other"] + s["transport"] + s["timeout"] + s["not_sent"]
            cold = lv.counters.get("cold starts", lv.counters.get("loads"))
            out.append(f"| {r.label} | {lv.offered_rps:.0f} | {lv.goodput_rps:.1f} | {_pct(lv.attainment)} | "
                       f"{_pct(lv.admitted_attainment)} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | "
                       f"{_ms(s['p999_ms'])} | {refused} | {errors} | {'-' if cold is None else f'{cold:.0f}'} | "
                       f"{lv.peak_memory_bytes / 2**20:.0f} |")
    out += ["", "## Targets", "", *targets(results), "", "## What each system can do", "",
            "| system | " + " | ".join(CAPABILITIES) + " |", "|---" * (len(CAPABILITIES) + 1) + "|"]
    for r in results:
        out.append(f"| {r.label} | " + " | ".join(r.capabilities.get(c, "-") for c in CAPABILITIES) + " |")
    out += ["", "## Settings (everything that could favour one side)", ""]
    for r in results:
        out.append(f"### {r.label}")
        out += [f"- {k}: {v}" for k, v in r.settings.items()]
        bad = {k: v for k, v in r.checks.items() if v != "ok"}
        if bad:
            out.append(f"- models that did not answer as the reference: {json.dumps(bad)[:600]}")
        if r.error:
            out.append(f"- error: {r.error[:600]}")
        note = REPO / "bench" / "peers" / "notes" / f"{r.system}.md"
        if note.exists():
            out += ["", note.read_text().strip()]
        out.append("")
    return "\n".join(out) + "\n"


def plot(results: list[runner.SystemResult], path_goodput: Path, path_p99: Path) -> None:
    plt = pyplot()
    for metric, path, ylabel in (("goodput", path_goodput, "goodput (responses within SLO per s)"),
                                 ("p99", path_p99, "p99 latency of answered requests (ms)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in results:
            if not r.levels:
                continue
            xs = [lv.offered_rps for lv in r.levels]
            ys = [lv.goodput_rps if metric == "goodput" else (lv.summary["p99_ms"] or float("nan")) for lv in r.levels]
            ax.plot(xs, ys, marker="o", label=r.label)
        ax.set_xlabel("offered load (req/s)")
        ax.set_ylabel(ylabel)
        if metric == "p99":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default=",".join(registry.SYSTEMS), help="comma-separated, run in this order")
    p.add_argument("--copies", type=int, default=3, help="copies of each kind and format (10 models per copy)")
    p.add_argument("--levels", default=",".join(f"{f:g}" for f in DEFAULT_LEVELS), help="fractions of capacity")
    p.add_argument("--level-s", type=float, default=20.0)
    p.add_argument("--warmup-s", type=float, default=10.0)
    p.add_argument("--memory-fraction", type=float, default=1 / 3, help="of the models that fit at once")
    p.add_argument("--cpus", default="1", help="every server process")
    p.add_argument("--driver-cpus", default="0")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS / "peers.md")
    args = p.parse_args(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    work = REPO / "bench" / ".peers" / "run"
    shutil.rmtree(work, ignore_errors=True)
    models = wl.build_models(work / "models", copies=args.copies, cpus=args.cpus)
    runner.save_models(models, work / "models")
    spec = runner.Spec(str(work / "models"), args.cpus, 1, runner.model_memory_for(models, args.memory_fraction),
                       args.driver_cpus, wl.capacity_rps(models), [float(x) for x in args.levels.split(",")],
                       args.level_s, args.warmup_s, 0.25, args.seed, 1.0, str(work / "systems"))
    ceiling = driver_ceiling(args.cpus, args.driver_cpus)
    results = []
    for name in args.systems.split(","):
        print(f"== {name}", flush=True)
        try:
            res = runner.run_in_child(name, spec, work / f"{name}.json", work / f"{name}.log", timeout_s=3600)
        except Exception as exc:  # noqa: BLE001 - a system that cannot be installed is a row, not the end
            res = runner.SystemResult(name, name, {}, {}, {}, 0.0, None, error=f"{type(exc).__name__}: {exc}")
        results.append(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.peers " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.write_text(markdown(results, spec, models, ceiling, command.strip(), started))
    plot(results, args.out.with_name("peers_goodput.png"), args.out.with_name("peers_p99.png"))
    args.out.with_suffix(".json").write_text(json.dumps({"spec": asdict(spec), "ceiling": ceiling,
                                                          "results": [asdict(r) for r in results]}, indent=1))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
