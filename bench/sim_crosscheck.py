"""Cross-check (issue 14): the same small workload through the real ``inferplex up`` and
through the simulator, with the profiles inferplex measured for those models.

    .venv/bin/python -m bench.sim_crosscheck [--minutes 1] [--models 4] [--utilization 0.5,0.85]

Real half: one ``inferplex up`` with one worker (pinned to CPU 1, one intra-op thread;
control plane and this driver on CPU 0), a few dense-stack models
(bench/_placement_setup.py, ONNX and TorchScript) uploaded and profiled, each loaded by
one request, then open-loop Poisson arrivals through the gateway (bench/loadgen.py,
tritonclient) for ``--minutes`` at each load level (``--utilization``), one after another. Zipf popularity over the models; SLOs from the model
type's execute p99 measured here before (placement_eviction.md, ``SLO_BASIS_MS``), so they
are fixed at upload. Before the measured load, each model gets a few requests one at a time:
their client latency minus the profile's execute time is the per-request overhead the
profile does not hold (two loopback hops, the worker's hop to its model host).

Simulated half: the same arrivals (the same seed, ``sim.workload.poisson_workload``) and
SLOs, each model's profile read back through ``GET /v2/models/{m}/profile``
(``sim.profiles.from_inferplex_profile``), one simulated instance with the worker's
memory, ``sim.runner``'s production scheduler, planner and predictor; execution noise of
the spread the profiles show (their p99 / p50 at batch 1). Models are loaded by one
arrival each in a warm-up left out of the counts, as the real half loaded them. Run
twice: with the profiles as read, and with the measured overhead added to every
execution (it holds the instance's slot in the real system too).

Writes bench/results/sim_crosscheck.{md,png}, the profiles read back
(sim_crosscheck_profiles.json) and what the real half did (sim_crosscheck_run.json: per level
its requests' outcomes and the executions the instance reported, ``GET /admin/predictions``).
A third simulation per level uses those executions' own spread (observed / profiled p50,
resampled) and starts the predictor from the stored profile, tails included.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist, median

import numpy as np

from bench import _placement_setup as ps
from bench import _scheduler_setup as setup
from bench import loadgen
from bench._common import pyplot
from bench._scheduler_setup import BenchModel, Service
from profiler.profile import ClassProfile
from sim.profiles import Profile, from_inferplex_profile
from sim.workload import ArrivalChunk, SimModel, Workload, poisson_workload

TENANT = "acme"
# one of each width, both runtimes: 5-14 ms at batch 1 here (placement_eviction.md)
TYPES = (ps.MODEL_TYPES[0], ps.MODEL_TYPES[2], ps.MODEL_TYPES[4], ps.MODEL_TYPES[5])
PINNING = ("--worker-cpus", setup.INSTANCE_CPUS, "--cpus", setup.DRIVER_CPUS, "--worker-threads", "1")
TARGET_PP = 2.0
# execute p99 ms at batch 1 per type, bench/results/placement_eviction.md: the SLOs' basis, fixed so
# reruns compare like with like (sim.profiles.measured_profiles() now holds this bench's own curves)
SLO_BASIS_MS = {"onnx256": 8.89, "onnx512": 5.66, "onnx1024": 5.89, "pt256": 6.20, "pt512": 8.01, "pt1024": 13.95}
WARMUP_GAP_S = 0.5  # between the simulated warm-up arrivals: each model's load ends before the next


# ---------------------------------------------------------------- pure parts


def slo_ms(exec_p99_ms: float, factor: float, overhead_ms: float = 2.0, floor_ms: float = 20.0) -> float:
    """``factor`` x (execute p99 + overhead), at least ``floor_ms``, rounded up to 5 ms."""
    return max(floor_ms, 5.0 * math.ceil(factor * (exec_p99_ms + overhead_ms) / 5.0))


def with_overhead(p: Profile, seconds: float) -> Profile:
    """``p`` with ``seconds`` more on every execution (median and p99)."""
    return replace(p, exec_s=tuple((b, t + seconds) for b, t in p.exec_s),
                   exec_p99_s=tuple((b, t + seconds) for b, t in p.exec_p99_s),
                   source=f"{p.source} + {seconds * 1e3:.2f} ms per execution (measured overhead)")


def noise_cv(profiles: Sequence[Profile]) -> float:
    """The coefficient of variation of lognormal noise whose p99 / p50 is the profiles'
    median ratio at batch 1 (within 0.02..1)."""
    ratios = [p.exec_p99_at(1) / p.exec_at(1) for p in profiles if p.exec_at(1) > 0]
    if not ratios:
        return 0.05
    sigma = math.log(max(median(ratios), 1.0)) / NormalDist().inv_cdf(0.99)
    return min(1.0, max(0.02, math.sqrt(math.expm1(sigma * sigma))))


class ObservedNoise:
    """Execution noise resampled from what the real instance did: each factor is one of the
    observed execute times over its model's profiled p50 at that batch (``sim.instances.
    Noise``'s interface: ``factor()``, ``quantile(pct)``)."""

    def __init__(self, ratios: Sequence[float], seed: int) -> None:
        if not ratios:
            raise ValueError("no observed executions to resample")
        self.ratios = sorted(float(r) for r in ratios)
        self._rng = random.Random(seed)

    def factor(self) -> float:
        return self.ratios[self._rng.randrange(len(self.ratios))]

    def quantile(self, pct: float) -> float:
        return float(np.percentile(self.ratios, pct))


def observed_ratios(samples: Sequence[Mapping[str, object]], profiles: Mapping[str, Profile]) -> list[float]:
    """``GET /admin/predictions`` rows (instance-level model names) -> observed / profiled p50."""
    out = []
    for row in samples:
        name = str(row["model"]).split("__", 1)[-1]
        if name in profiles:
            out.append(float(row["observed_s"]) / profiles[name].exec_at(int(row["batch"])))  # type: ignore[call-overload]
    return out


def warmed(workload: Workload, models: Sequence[SimModel], warmup_s: float) -> Workload:
    """``workload``'s arrivals ``warmup_s`` later, after one arrival per model (its load)."""
    if warmup_s < WARMUP_GAP_S * len(models):
        raise ValueError(f"the warm-up needs {WARMUP_GAP_S * len(models):g} s for {len(models)} models")

    def source() -> Iterator[ArrivalChunk]:
        yield ArrivalChunk(t=np.arange(len(models)) * WARMUP_GAP_S, model=np.arange(len(models), dtype=np.int64))
        for c in workload.chunks():
            yield ArrivalChunk(t=c.t + warmup_s, model=c.model, rows=c.rows)

    return Workload(models=list(models), duration_s=workload.duration_s + warmup_s,
                    description=f"{workload.description}, after a {warmup_s:g} s warm-up",
                    source=source, mean_rate=workload.mean_rate, model_rates=workload.model_rates)


def schedules(workload: Workload) -> list[list[float]]:
    """Per model index, its arrival times (the real half's open-loop schedules)."""
    out: list[list[float]] = [[] for _ in workload.models]
    for c in workload.chunks():
        for t, m in zip(c.t.tolist(), c.model.tolist(), strict=True):
            out[m].append(t)
    return out


@dataclass(frozen=True)
class Outcome:
    """One half's counts, the way both are compared."""

    label: str
    sent: int
    refused: int
    dropped: int
    ok_in_slo: int
    late: int
    other: int
    p50_ms: float | None
    p99_ms: float | None
    latencies_ms: tuple[float, ...] = ()
    per_model: tuple[tuple[str, int, int], ...] = ()  # (model, answered, in SLO)

    @property
    def admitted(self) -> int:
        return self.sent - self.refused

    @property
    def slo_admitted(self) -> float | None:
        return self.ok_in_slo / self.admitted if self.admitted else None

    @property
    def slo_all(self) -> float | None:
        return self.ok_in_slo / self.sent if self.sent else None


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def real_outcome(records: Sequence[loadgen.Record], slos_ms: Mapping[str, float]) -> Outcome:
    """Requests sent (not the driver's 'not sent'); refused = 429 + 503; dropped = 504;
    OK answers within or past their SLO; anything else (errors, timeouts) counted apart."""
    sent = [r for r in records if r.outcome is not loadgen.Outcome.NOT_SENT]
    ok = [r for r in sent if r.outcome is loadgen.Outcome.OK and r.latency_s is not None]
    lat = [r.latency_s * 1e3 for r in ok]  # type: ignore[operator]
    within = [r for r in ok if r.latency_s * 1e3 <= slos_ms[r.model]]  # type: ignore[operator]
    refused = sum(r.outcome.refused for r in sent)
    dropped = sum(r.outcome is loadgen.Outcome.DROPPED for r in sent)
    per_model = [(name, sum(1 for r in ok if r.model == name), sum(1 for r in within if r.model == name))
                 for name in sorted(slos_ms)]
    return Outcome("real", len(sent), refused, dropped, len(within), len(ok) - len(within),
                   len(sent) - refused - dropped - len(ok), _pct(lat, 50), _pct(lat, 99), tuple(lat),
                   tuple(per_model))


# ---------------------------------------------------------------- the simulated half


def simulate(workload: Workload, models: Sequence[SimModel], memory: int, seed: int, cv: float,
             warmup_s: float, label: str, predictor_seed: Mapping[str, ClassProfile] | None = None,
             noise: ObservedNoise | None = None) -> Outcome:
    """``workload`` (with ``models``) on one simulated instance, the warm-up left out.
    ``predictor_seed``: per model, the profile the predictor starts from instead of the
    runner's (which derives p99s from the noise model): the stored one, tail and all.
    ``noise``: execution noise to use instead of the runner's lognormal one."""
    from sim.metrics import Recorder
    from sim.runner import INSTANCE_CLASS, Simulation

    w = warmed(workload, models, warmup_s)
    # an answer's arrival time tells its model: the arrival times are distinct floats
    who = {t: m for c in w.chunks() for t, m in zip(c.t.tolist(), c.model.tolist(), strict=True)}

    class Measured(Recorder):
        """The runner's recorder, counting only what happens after the warm-up, and each
        answer's model, latency and whether it made its SLO."""

        def __init__(self, duration_s: float) -> None:
            super().__init__(duration_s)
            self.answers: list[tuple[int, float, bool]] = []  # (model, latency s, in SLO)

        def add(self, what: str, t: float, n: float = 1.0) -> None:
            if t >= warmup_s:
                super().add(what, t, n)

        def refused(self, reason: str, t: float) -> None:
            if t >= warmup_s:
                super().refused(reason, t)

        def served(self, arrival: float, end: float, deadline: float) -> None:
            if arrival >= warmup_s:
                super().served(arrival, end, deadline)
                self.answers.append((who.get(arrival, -1), end - arrival, end <= deadline))

    sim = Simulation(w, instances=1, instance_memory=memory, policy="inferplex", seed=seed, noise_cv=cv)
    if noise is not None:
        sim.noise = noise  # type: ignore[assignment]
    for name, prof in (predictor_seed or {}).items():
        sim.predictor.seed_from_profile(name, INSTANCE_CLASS, prof)
    rec = sim.rec = Measured(w.duration_s)
    res = sim.run()
    lat = [a[1] * 1e3 for a in rec.answers]
    per_model = []
    for i, m in sorted(enumerate(models), key=lambda x: x[1].name):
        mine = [a for a in rec.answers if a[0] == i]
        per_model.append((m.name, len(mine), sum(a[2] for a in mine)))
    refused = sum(res.refused.values())
    return Outcome(label, res.arrivals, refused, res.dropped, res.ok, res.late,
                   res.arrivals - refused - res.dropped - res.ok - res.late,
                   _pct(lat, 50), _pct(lat, 99), tuple(lat), tuple(per_model))


# ---------------------------------------------------------------- the real half


@dataclass
class RealRun:
    records: list[list[loadgen.Record]]  # per load level, in the order planned
    samples: list[list[dict]]  # per level: GET /admin/predictions rows (observed executions)
    profiles: dict[str, Profile]
    stored: dict[str, dict]
    overhead_s: float
    upload_s: float
    memory: int


def _profile_view(cp, key: str, name: str) -> dict:  # noqa: ANN001 - tests.integration's ControlPlane
    with cp.client(key) as c:
        r = c.get(f"/v2/models/{name}/profile")
        r.raise_for_status()
        return r.json()


def real_half(tmp: Path, bench_models: Sequence[BenchModel], memory: int, plan) -> RealRun:  # noqa: ANN001
    """Upload, profile, load, measure the overhead, then ``plan(profiles, overhead_s)`` gives
    (per model arrival schedules, duration) per load level, driven one after another (the
    plan needs the profiles to set the rates)."""
    from tests.integration.cp_harness import running_up

    d = tmp / "real"
    d.mkdir(parents=True, exist_ok=True)
    with running_up(d / "data", d / "up.log", workers=1, worker_memory=str(memory), extra_args=PINNING) as cp:
        svc = Service("real", cp)
        key = svc.keys[TENANT] = cp.create_tenant(TENANT)
        t0 = time.perf_counter()
        for m in bench_models:  # one at a time: profiles taken side by side would disturb each other
            for _ in range(3):  # the upload's confined check can time out on a loaded machine
                r = cp.upload(key, m.name, m.artifact.data, **ps.upload_options(m))
                if not (r.status_code == 400 and "could not be checked" in r.text):
                    break
            assert r.status_code == 201, f"upload {m.name}: {r.status_code} {r.text}"
            cp.wait_model_status(key, m.name, "ready", timeout_s=300)
        upload_s = time.perf_counter() - t0
        for m in bench_models:
            loadgen.run([svc.stream(TENANT, m, [0.0])], request_timeout_s=30)  # its cold load
        # a few requests one at a time per model: the round trip beyond the execute time
        alone = [svc.stream(TENANT, m, [0.25 + 0.04 * k + 2.0 * i for k in range(25)])
                 for i, m in enumerate(bench_models)]
        light = loadgen.run(alone, request_timeout_s=10).records
        accounted = {p["name"].split("__", 1)[1]: p["bytes"] for i in cp.instances() for p in i["models"]}
        stored = {m.name: _profile_view(cp, key, m.name) for m in bench_models}
        profiles = {name: from_inferplex_profile(name, view, accounted.get(name), instance_class=None)
                    for name, view in stored.items()}
        gaps = [r.latency_s - profiles[r.model].exec_at(1) for r in light
                if r.outcome is loadgen.Outcome.OK and r.latency_s is not None]
        overhead = max(0.0, median(gaps)) if gaps else 0.0
        levels, samples = [], []
        for scheds, duration in plan(profiles, overhead):
            streams = [svc.stream(TENANT, m, s) for m, s in zip(bench_models, scheds, strict=True)]
            since = time.time()
            levels.append(loadgen.run(streams, duration_s=duration, max_in_flight=2000, request_timeout_s=10.0,
                                      max_lateness_s=0.05).records)
            with cp.admin() as c:
                r = c.get("/admin/predictions", params={"since": since})
                samples.append(r.json()["samples"] if r.status_code == 200 else [])
    return RealRun(levels, samples, profiles, stored, overhead, upload_s, memory)


# ---------------------------------------------------------------- report


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _row(o: Outcome, real: Outcome | None) -> str:
    d_adm = d_all = d99 = "-"
    if real is not None and o is not real:
        if o.slo_admitted is not None and real.slo_admitted is not None:
            d_adm = f"{100 * (o.slo_admitted - real.slo_admitted):+.2f} pp"
        if o.slo_all is not None and real.slo_all is not None:
            d_all = f"{100 * (o.slo_all - real.slo_all):+.2f} pp"
        if o.p99_ms is not None and real.p99_ms is not None:
            d99 = f"{o.p99_ms - real.p99_ms:+.1f} ms"
    adm = "-" if o.slo_admitted is None else f"{o.slo_admitted:.2%}"
    al = "-" if o.slo_all is None else f"{o.slo_all:.2%}"
    return (f"| {o.label} | {o.sent} | {o.refused} | {o.dropped} | {o.late} | {o.other} | {adm} | {d_adm} | "
            f"{al} | {d_all} | {_f(o.p50_ms, '.1f')} | {_f(o.p99_ms, '.1f')} | {d99} |")


def _plot(levels: Sequence[tuple[str, Sequence[Outcome]]], path: Path) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt = pyplot()
    fig, axes = plt.subplots(1, len(levels) + 1, figsize=(5 * (len(levels) + 1), 4))
    for ax, (title, outcomes) in zip(axes, levels, strict=False):
        for o in outcomes:
            lat = np.sort(np.array(o.latencies_ms))
            if len(lat):
                ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=o.label)
        ax.set(xscale="log", xlabel="latency ms (answered requests)", ylabel="fraction",
               title=f"latency CDF, {title}")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    b = axes[-1]
    title, outcomes = levels[-1]
    models = [name for name, _, _ in outcomes[0].per_model]
    x = np.arange(len(models))
    width = 0.8 / max(1, len(outcomes))
    for k, o in enumerate(outcomes):
        got = {n: (100 * s / adm if adm else np.nan) for n, adm, s in o.per_model}
        b.bar(x + k * width, [got.get(n, np.nan) for n in models], width, label=o.label)
    b.set_xticks(x + width * (len(outcomes) - 1) / 2, models, rotation=20, fontsize=8)
    lo = min([100 * s / adm for o in outcomes for _, adm, s in o.per_model if adm] or [90.0])
    b.set(ylim=(max(0.0, lo - 2), 100.5), ylabel="% of answered within SLO",
          title=f"SLO attainment per model, {title}")
    b.grid(alpha=0.3, axis="y")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_model(outcomes: Sequence[Outcome]) -> str:
    head = " | ".join(o.label for o in outcomes)
    lines = [f"| model | {head} |", "|---|" + "---:|" * len(outcomes)]
    for k, (name, _, _) in enumerate(outcomes[0].per_model):
        cells = [f"{100 * o.per_model[k][2] / o.per_model[k][1]:.2f}% of {o.per_model[k][1]}"
                 if o.per_model[k][1] else "-" for o in outcomes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=1.0, help="measured minutes of load per level")
    p.add_argument("--models", type=int, default=4, help="models (cycling through the four types)")
    p.add_argument("--max-batch", type=int, default=4, help="each model's max_batch_size")
    p.add_argument("--utilization", default="0.5,0.85",
                   help="load levels, one after another: the rate that keeps the instance this busy by the "
                        "profiles (+ the measured overhead)")
    p.add_argument("--zipf", type=float, default=1.0)
    p.add_argument("--slo-factor", type=float, default=5.0, help="SLO = factor x (type's execute p99 + 2 ms)")
    p.add_argument("--worker-memory", type=int, default=1 << 30, help="bytes (default: all models fit)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    utils = [float(u) for u in args.utilization.split(",") if u]
    out = args.out or setup.RESULTS / "sim_crosscheck.md"
    started = time.perf_counter()
    loadgen.pin_driver(setup.DRIVER_CPUS)
    bench_models = ps.model_set(args.models, TYPES, args.max_batch)
    slos = {m.name: slo_ms(SLO_BASIS_MS[ps.model_type(m.name)], args.slo_factor) for m in bench_models}
    bench_models = [replace(m, slo_ms=slos[m.name]) for m in bench_models]
    duration = args.minutes * 60
    planned: list[tuple[float, Workload]] = []

    def plan(profiles: dict[str, Profile], overhead_s: float) -> list[tuple[list[list[float]], float]]:
        shape = poisson_workload(len(bench_models), duration, 1.0, args.seed, zipf_s=args.zipf)
        share = shape.model_rates / shape.model_rates.sum()
        busy = sum(s * (profiles[m.name].exec_at(1) + overhead_s) for s, m in zip(share, bench_models, strict=True))
        for k, u in enumerate(utils):
            w = poisson_workload(len(bench_models), duration, u / busy, args.seed + k, zipf_s=args.zipf)
            planned.append((u, w))
        return [(schedules(w), duration) for _, w in planned]

    with tempfile.TemporaryDirectory(prefix="bench-crosscheck-") as tmp_name:
        real_run = real_half(Path(tmp_name), bench_models, args.worker_memory, plan)
    real_s = time.perf_counter() - started
    profs = [real_run.profiles[m.name] for m in bench_models]
    cv = noise_cv(profs)
    warmup = max(5.0, WARMUP_GAP_S * len(bench_models) + 2.0)
    as_read = [SimModel(m.name, TENANT, real_run.profiles[m.name], slos[m.name] / 1e3) for m in bench_models]
    plus = [replace(s, profile=with_overhead(s.profile, real_run.overhead_s)) for s in as_read]
    plus_label = f"sim: + {real_run.overhead_s * 1e3:.2f} ms overhead"
    t_sim = time.perf_counter()
    seeds = {}
    for name, view in real_run.stored.items():
        classes = view.get("classes") or {}
        if classes:
            seeds[name] = ClassProfile.model_validate(classes.get("cpu") or next(iter(classes.values())))
    levels: list[tuple[float, Workload, list[Outcome]]] = []
    for (u, w), records, samples in zip(planned, real_run.records, real_run.samples, strict=True):
        real = real_outcome(records, slos)
        outs = [real, simulate(w, as_read, args.worker_memory, args.seed, cv, warmup, "sim: profiles as read"),
                simulate(w, plus, args.worker_memory, args.seed, cv, warmup, plus_label)]
        ratios = observed_ratios(samples, real_run.profiles)
        if ratios:
            outs.append(simulate(w, plus, args.worker_memory, args.seed, cv, warmup,
                                 f"sim: + overhead, {len(ratios)} real executions' spread, stored tails",
                                 predictor_seed=seeds, noise=ObservedNoise(ratios, args.seed)))
        levels.append((u, w, outs))
    sim_s = time.perf_counter() - t_sim
    out.parent.mkdir(parents=True, exist_ok=True)
    # the profiles as the API answered them, for sim.profiles' measured table and for rerunning the simulation
    out.with_name(out.stem + "_profiles.json").write_text(json.dumps(
        {m.name: {"profile": real_run.stored[m.name], "bytes": real_run.profiles[m.name].bytes,
                  "slo_ms": slos[m.name]} for m in bench_models if m.name in real_run.stored}, indent=1) + "\n")
    # what the real half did, compactly, to simulate it again without the real system
    out.with_name(out.stem + "_run.json").write_text(json.dumps({
        "overhead_s": real_run.overhead_s, "noise_cv": cv, "warmup_s": warmup, "memory": args.worker_memory,
        "levels": [{"utilization": u, "rate": w.mean_rate, "seed": args.seed + k,
                    "observed": [[r["model"].split("__", 1)[-1], r["batch"], round(r["observed_s"], 7)]
                                 for r in samples],
                    "real": [[r.model, round(r.scheduled_s, 6), r.outcome.value,
                              None if r.latency_s is None else round(r.latency_s, 6)] for r in records]}
                   for k, ((u, w), records, samples) in enumerate(zip(planned, real_run.records, real_run.samples,
                                                                       strict=True))]}) + "\n")
    _plot([(f"{u:.0%} busy", outs) for u, _, outs in levels], out.with_suffix(".png"))

    def d_pp(o: Outcome, real: Outcome) -> float | None:
        if o.slo_admitted is None or real.slo_admitted is None:
            return None
        return 100 * (o.slo_admitted - real.slo_admitted)

    verdicts = []
    for u, _, (real, *sims) in levels:
        for o in sims:
            d = d_pp(o, real)
            verdicts.append(
                f"- {u:.0%} busy, {o.label}: |difference in SLO attainment of admitted requests| = "
                f"{_f(None if d is None else abs(d), '.2f')} pp -> "
                f"**{'met' if d is not None and abs(d) <= TARGET_PP else 'missed'}** (target <= {TARGET_PP:g} pp); "
                f"p99 {_f(o.p99_ms, '.1f')} ms vs real {_f(real.p99_ms, '.1f')} ms")
    rates = {m.name: [w.model_rates[i] for _, w, _ in levels] for i, m in enumerate(bench_models)}
    prof_rows = "\n".join(
        f"| {m.name} | {p.bytes / 2**20:.1f} | {p.load_cold_s * 1e3:.0f} | {p.load_warm_s * 1e3:.0f} | "
        + ", ".join(f"{b}: {t * 1e3:.2f}/{p.exec_p99_at(b) * 1e3:.2f}" for b, t in p.exec_s)
        + f" | {slos[m.name]:g} | {' / '.join(f'{r:.1f}' for r in rates[m.name])} |"
        for m, p in zip(bench_models, profs, strict=True))
    rows = "\n".join(f"| {u:.0%} | {w.mean_rate:.1f} " + _row(o, outs[0]) for u, w, outs in levels for o in outs)
    per_model = "\n\n".join(f"{u:.0%} busy:\n\n{_per_model(outs)}" for u, _, outs in levels
                             if all(o.per_model for o in outs))
    fails = "\n".join(
        f"- {u:.0%} busy: " + ("; ".join(f"{c} x {o} ({st}): {msg[:120]!r}" for (o, st), (c, msg)
                                         in setup.failure_examples(records).items()) or "none")
        for (u, _), records in zip(planned, real_run.records, strict=True))
    cmd = "python -m bench.sim_crosscheck " + " ".join(argv)
    out.write_text(f"""# Simulator cross-check: the real system and the simulator, one workload (issue 14)

Command: `{cmd.strip()}` — {setup.machine()}; {time.perf_counter() - started:.0f} s in all
(real half {real_s:.0f} s, of which uploads with profiling {real_run.upload_s:.0f} s; all simulations {sim_s:.1f} s).

Workload per level: Poisson arrivals, Zipf s={args.zipf:g} popularity over {len(bench_models)} dense-stack
models (bench/_placement_setup.py, max_batch_size {args.max_batch}), one tenant, {duration:g} s; the rate
keeps the instance {", ".join(f"{u:.0%}" for u in utils)} busy by the profiles below plus the measured
overhead (seeds {", ".join(str(args.seed + k) for k in range(len(utils)))}). Real: one `inferplex up --workers 1
--worker-memory {args.worker_memory}` (worker pinned to CPU {setup.INSTANCE_CPUS}, one intra-op thread;
control plane and driver on CPU {setup.DRIVER_CPUS}), open-loop streams through the gateway
(tritonclient.http.aio), levels one after another; each model loaded by one request first. Simulated: the
same arrivals, one instance of the same memory, the production Scheduler / Planner / LatencyPredictor
(`sim.runner`), each model loaded by one arrival in a {warmup:g} s warm-up that is not counted; execution
noise lognormal with CV {cv:.3f} (the profiles' median p99/p50 at batch 1).

Profiles as `GET /v2/models/{{m}}/profile` answered after the loads (stored profile + live window;
`sim.profiles.from_inferplex_profile`; bytes: what the control plane accounts for the loaded copy):

| model | MiB | load cold ms | load warm ms | execute ms per batch (p50/p99) | SLO ms | req/s per level |
|---|---:|---:|---:|---|---:|---:|
{prof_rows}

SLO = {args.slo_factor:g} x (the type's execute p99 at batch 1 in placement_eviction.md + 2 ms),
at least 20 ms, rounded up to 5 ms (fixed at upload, before this run's profile exists).
Overhead the profile does not hold: median over {len(bench_models)} x 25 requests sent one at a time of
(client latency - the profile's batch-1 execute p50) = {real_run.overhead_s * 1e3:.2f} ms. The third
simulation per level (where the instance reported executions) resamples execution noise from that level's
real executions (observed / profiled p50, `GET /admin/predictions`) and starts the predictor from the stored
profile, its measured p99s included, instead of the runner's noise-derived ones.

| busy | req/s | half | requests | refused | dropped | late | other | SLO attainment (admitted) | vs real | SLO attainment (all) | vs real | p50 ms | p99 ms | p99 vs real |
|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

Real: refused = 429 + 503 answers, dropped = 504, late = answered past the SLO, other = errors,
transport failures, timeouts; latency is the client's (send to answer). Simulated: the runner's
counts; latency arrival to completion.

Per model, the share of its answered requests within the SLO (drops and refusals left out: the
simulator does not tell its drops apart by model):

{per_model}

Targets (SLO attainment within {TARGET_PP:g} percentage points):
{chr(10).join(verdicts)}

Real requests that were not OK (one message each):
{fails}

Noise: one run on a 2-core machine shared with other work; the real half's tail moves with whatever
else runs on CPU 0 and 1, the simulator's does not.

![cross-check]({out.with_suffix('.png').name})
""")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
