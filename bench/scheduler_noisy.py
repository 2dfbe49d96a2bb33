"""Noisy neighbour (issue 9, benchmark 2): tenant B at a steady rate alone, then with
tenant A sending 10x its rate quota at the same models; scheduler on vs the pass-through.

    .venv/bin/python -m bench.scheduler_noisy [--step-s 10]

Both tenants upload the same four models (mixed size) on both services
(bench/_scheduler_setup.py). Capacity: the instance's closed-loop saturation rate for
that mix through the scheduler's service. B offers ``--b-load`` x capacity (Poisson,
uniform over the models, the same seeds in both phases); A's quota is set with
``PATCH /admin/tenants/a`` to ``--a-quota`` x capacity and A sends 10x that. The
pass-through stores the quota but does not enforce it (that is what it is kept for).
Phases run in turns: alone (scheduler, pass-through), then with A (scheduler, pass-through).

Writes bench/results/scheduler_noisy.{md,png}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench import _scheduler_setup as setup
from bench import loadgen
from bench._common import pyplot

SERVICES = ("scheduler", "pass-through")
PHASES = ("B alone", "B with A at 10x its quota")
MODELS = ("dense40", "dense140", "dense300", "dense550")


def _plot(records: dict[tuple[str, str], list[loadgen.Record]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, label in zip(axes, SERVICES, strict=True):
        for phase in PHASES:
            lat = sorted(r.latency_s * 1e3 for r in records[(label, phase)]
                         if r.tenant == "tb" and r.outcome is loadgen.Outcome.OK and r.latency_s is not None)
            if lat:
                ax.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))], label=phase)
        ax.set(xscale="log", xlabel="tenant B's OK latency (ms, log)", title=label)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _within(a: float | None, b: float | None, worse_is_higher: bool) -> tuple[str, bool]:
    if a is None or b is None:
        return "-", False
    change = (b - a) / a if worse_is_higher else (a - b) / a
    return f"{change:.1%} worse", change <= 0.10


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step-s", type=float, default=10.0)
    p.add_argument("--b-load", type=float, default=0.4, help="B's offered load, x capacity")
    p.add_argument("--a-quota", type=float, default=0.1, help="A's rate quota, x capacity (A sends 10x)")
    p.add_argument("--out", type=Path, default=setup.RESULTS / "scheduler_noisy.md")
    args = p.parse_args(argv)
    started = time.perf_counter()
    bench_models = [m for m in setup.calibrate_slos(setup.mixed_models()) if m.name in MODELS]
    slos = setup.slo_map(bench_models)
    loadgen.pin_driver(setup.DRIVER_CPUS)
    records: dict[tuple[str, str], list[loadgen.Record]] = {}
    restored: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-noisy-") as tmp, setup.two_services(Path(tmp)) as svc:
        for s in svc.values():
            for tenant in ("ta", "tb"):
                s.upload(tenant, bench_models)
                setup.warm(s, tenant, bench_models)
        capacity = setup.saturation_rps(svc["scheduler"], "tb", bench_models, seconds=4.0)
        quota = args.a_quota * capacity
        for s in svc.values():
            s.patch_tenant("ta", rate_per_s=round(quota, 1))
        b_rate = args.b_load * capacity / len(bench_models)
        a_rate = 10 * quota / len(bench_models)
        print(f"capacity {capacity:.0f} req/s; B {b_rate * len(bench_models):.0f} req/s, A's quota {quota:.0f} "
              f"req/s, A sends {a_rate * len(bench_models):.0f} req/s", flush=True)
        for phase in PHASES:
            for label in SERVICES:
                s = svc[label]
                streams = [s.stream("tb", m, loadgen.poisson(b_rate, args.step_s, seed=10 + j))
                           for j, m in enumerate(bench_models)]
                if phase != PHASES[0]:
                    streams += [s.stream("ta", m, loadgen.poisson(a_rate, args.step_s, seed=50 + j))
                                for j, m in enumerate(bench_models)]
                run = loadgen.run(streams, duration_s=args.step_s, max_in_flight=4000, request_timeout_s=5.0,
                                  max_lateness_s=0.05)
                records[(label, phase)] = run.records
                setup.settle(s, "tb", bench_models[0])
                restored[f"{phase}, {label}"] = [f"{t}/{n}" for t in ("ta", "tb")
                                                 for n in s.restore_failed(t, bench_models)]
                b = loadgen.summarize([r for r in run.records if r.tenant == "tb"], slos, args.step_s)
                print(f"{phase} {label}: B p99 {b.p99_ms} ms, attainment {b.slo_attainment}", flush=True)
    rows: dict[str, loadgen.Summary] = {}
    b_of: dict[tuple[str, str], loadgen.Summary] = {}
    for (label, phase), recs in records.items():
        for tenant, summary in loadgen.summarize_by(recs, lambda r: r.tenant, slos, args.step_s).items():
            rows[f"{phase}, {label}: tenant {tenant[1].upper()}"] = summary
            if tenant == "tb":
                b_of[(label, phase)] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _plot(records, args.out.with_suffix(".png"))
    checks = []
    for label in SERVICES:
        alone, noisy = b_of[(label, PHASES[0])], b_of[(label, PHASES[1])]
        p99, ok_p99 = _within(alone.p99_ms, noisy.p99_ms, worse_is_higher=True)
        att, ok_att = _within(alone.slo_attainment, noisy.slo_attainment, worse_is_higher=False)
        checks.append(f"- {label}: B's p99 {alone.p99_ms:.2f} -> {noisy.p99_ms:.2f} ms ({p99}); B's SLO "
                      f"attainment {alone.slo_attainment:.2%} -> {noisy.slo_attainment:.2%} ({att}) -> "
                      f"**{'met' if ok_p99 and ok_att else 'missed'}**")
    fails = "\n".join(f"- {phase}, {label}: " + "; ".join(
        f"{n} x {o} ({st}): {msg[:140]!r}" for (o, st), (n, msg) in setup.failure_examples(recs).items())
        for (label, phase), recs in records.items())
    quarantined = "\n".join(f"- {k}: {', '.join(v) or 'none'}" for k, v in restored.items())
    cmd = ("python -m bench.scheduler_noisy " + " ".join(argv)).strip()
    args.out.write_text(f"""# Noisy neighbour (issue 9, benchmark 2)

Command: `{cmd}` — {setup.machine()}; {time.perf_counter() - started:.0f} s in all.

Setup as in scheduler_overload.md (two `inferplex up`, scheduler on / pass-through, one pinned
worker each, driver and control planes on the other CPU). Tenants A and B each upload the same
four models. Capacity (closed-loop saturation of the mix through the scheduler): **{capacity:.0f}
req/s**. B offers {args.b_load:g}x capacity ({b_rate * len(bench_models):.0f} req/s, Poisson, the same
arrivals in both phases). A's rate quota (`PATCH /admin/tenants/ta {{"rate_per_s": {quota:.1f}}}`) is
{args.a_quota:g}x capacity and A sends 10x that ({a_rate * len(bench_models):.0f} req/s); the pass-through
does not enforce quotas. {args.step_s:g} s per phase and service.

{setup.model_table(bench_models)}
{setup.per_level(rows)}
Target: B's p99 and SLO attainment with A within 10% of B alone:
{chr(10).join(checks)}

Models quarantined in a step and uploaded again after it:
{quarantined}

What the requests that were not OK were answered (one message each):
{fails}

Noise: one run on a 2-core machine shared with other agents' work; with A, the driver sends
{(b_rate + a_rate) * len(bench_models):.0f} req/s from the core the control planes share, so part of
B's p99 change is the driver's and the gateway's CPU (A's 429s cost CPU too), not instance time.

![noisy neighbour]({args.out.with_suffix('.png').name})
""")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
