"""Benchmark 4 of issue 9: the cost of the pure scheduler core per decision.

    python -m bench.scheduler_core

Keeps a steady backlog (1,000 queued requests over 100 models and 10 instances, and a
second size the simulator will run at: 10,000 over 10,000 models and 1,000 instances)
and runs admit + schedule + complete cycles on a virtual clock: each cycle tops the
backlog up, schedules every free slot, and completes what was dispatched. Ten tenants,
models of mixed max_batch_size (0, 4, 8), each on one or two instances, capacity 2.
Timed per call; a decision is one admit (admitted or refused), one dispatch or one drop.
Writes bench/results/scheduler_core.{md,png}.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from admission.model import Dispatch, InstanceSlot, ModelInfo, PendingRequest, TenantPolicy
from admission.scheduler import Scheduler
from bench._common import pct, pyplot

RESULTS = Path(__file__).resolve().parent / "results"


class TablePredictor:
    """Execute time by model: a per-model base plus a per-row cost growing with work."""

    def __init__(self, models: list[str], rng: random.Random) -> None:
        self._base = {m: rng.uniform(0.001, 0.004) for m in models}

    def exec_s(self, model: str, instance_class: str, rows: int, work: int) -> float | None:
        return self._base[model] * (1.0 + 0.25 * rows * work / 100)

    def load_s(self, model: str, instance_class: str) -> float | None:
        return 0.5


@dataclass
class Size:
    models: int
    instances: int
    queued: int
    cycles: int


@dataclass
class Timings:
    admit_us: list[float] = field(default_factory=list)
    schedule_us: list[float] = field(default_factory=list)  # per decision in the call
    complete_us: list[float] = field(default_factory=list)
    decisions: int = 0
    dispatched: int = 0
    dropped: int = 0
    refused: int = 0
    rows: int = 0
    total_s: float = 0.0


def _build(size: Size, rng: random.Random) -> tuple[Scheduler, list[str], list[str]]:
    models = [f"t{m % 10}__m{m}@1" for m in range(size.models)]
    s = Scheduler(TablePredictor(models, rng))
    for t in range(10):
        s.set_policy(f"t{t}", TenantPolicy(weight=1.0 + t % 3))
    for m in models:
        s.set_model(m, ModelInfo(rng.choice((0, 4, 8))))
    holds: dict[int, set[str]] = {i: set() for i in range(size.instances)}
    for n, m in enumerate(models):
        holds[n % size.instances].add(m)
        if n % 3 == 0:  # a third of the models are replicated on a second instance
            holds[(n + 1) % size.instances].add(m)
    s.set_instances([InstanceSlot(f"i{i}", "gpu", frozenset(ms), capacity=2) for i, ms in holds.items()])
    return s, models, [f"t{t}" for t in range(10)]


def run(size: Size, seed: int = 11) -> Timings:
    rng = random.Random(seed)
    s, models, tenants = _build(size, rng)
    out = Timings()
    now = 0.0
    seq = 0
    clock = time.perf_counter
    t_start = clock()
    for _ in range(size.cycles):
        while s.queued() < size.queued:
            m = rng.randrange(len(models))
            seq += 1
            r = PendingRequest(id=f"r{seq}", tenant=tenants[m % 10], model=models[m], display_name="m",
                               arrival_s=now, deadline_s=now + rng.uniform(1.0, 4.0),
                               rows=1, merge_key=rng.randrange(2), work=rng.choice((50, 100, 200)))
            t0 = clock()
            refusal = s.admit(r, now)
            out.admit_us.append((clock() - t0) * 1e6)
            out.decisions += 1
            out.refused += refusal is not None
        t0 = clock()
        decisions = s.schedule(now)
        elapsed = (clock() - t0) * 1e6
        if decisions:
            out.schedule_us.extend([elapsed / len(decisions)] * len(decisions))
        out.decisions += len(decisions)
        batches = [d for d in decisions if isinstance(d, Dispatch)]
        out.dispatched += len(batches)
        out.dropped += len(decisions) - len(batches)
        now += 0.002
        for d in batches:
            out.rows += d.rows
            t0 = clock()
            s.complete(d.batch_id, now, d.predicted_s)
            out.complete_us.append((clock() - t0) * 1e6)
    out.total_s = clock() - t_start
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=2000)
    args = p.parse_args(argv)
    sizes = {
        "1,000 queued / 100 models / 10 instances": Size(100, 10, 1000, args.cycles),
        "10,000 queued / 10,000 models / 1,000 instances": Size(10_000, 1000, 10_000, max(1, args.cycles // 10)),
    }
    results = {name: run(size) for name, size in sizes.items()}
    lines = [
        "# Scheduler core cost (issue 9, benchmark 4)",
        "",
        f"Command: `python -m bench.scheduler_core --cycles {args.cycles}` — {platform.machine()}, "
        f"Python {platform.python_version()}, one core of a shared machine. Steady backlog topped up "
        "every cycle; each cycle: admit until the backlog is full again, one `schedule(now)`, "
        "`complete` of every batch it dispatched. Ten tenants (weights 1-3), max_batch_size 0/4/8, "
        "a third of the models on two instances, two executions in flight per instance. "
        "Times per call (schedule: per decision it returned); setup not timed.",
        "",
        "| size | decisions/s | µs per decision | admit p50 / p99 µs | schedule p50 / p99 µs "
        "per decision | complete p50 / p99 µs | dispatches (rows/batch) | refused | dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        busy_s = (sum(r.admit_us) + sum(r.schedule_us) + sum(r.complete_us)) / 1e6
        lines.append(
            f"| {name} | {r.decisions / busy_s:,.0f} | {busy_s / r.decisions * 1e6:.1f} | "
            f"{pct(r.admit_us, 50):.1f} / {pct(r.admit_us, 99):.1f} | "
            f"{pct(r.schedule_us, 50):.1f} / {pct(r.schedule_us, 99):.1f} | "
            f"{pct(r.complete_us, 50):.1f} / {pct(r.complete_us, 99):.1f} | "
            f"{r.dispatched:,} ({r.rows / max(1, r.dispatched):.1f}) | {r.refused:,} | {r.dropped:,} |")
    lines += ["", "µs per decision = time inside admit + schedule + complete over admits + dispatches "
              "+ drops (completes are bookkeeping, not decisions, but their time is counted).",
              "Target (issue 9): microseconds per decision, at the simulator's 10,000 models too."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scheduler_core.md").write_text("\n".join(lines) + "\n")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ops = ("admit", "schedule (per decision)", "complete")
    width = 0.38
    for k, (name, r) in enumerate(results.items()):
        p50 = [pct(r.admit_us, 50), pct(r.schedule_us, 50), pct(r.complete_us, 50)]
        p99 = [pct(r.admit_us, 99), pct(r.schedule_us, 99), pct(r.complete_us, 99)]
        xs = [i + k * width for i in range(len(ops))]
        ax.bar(xs, p50, width, label=f"{name} (p50; whisker p99)",
               yerr=[[0] * 3, [b - a for a, b in zip(p50, p99, strict=True)]], capsize=4)
    ax.set_xticks([i + width / 2 for i in range(len(ops))], ops)
    ax.set_ylabel("µs per call")
    ax.set_title("Scheduler core: cost per call")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "scheduler_core.png", dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
