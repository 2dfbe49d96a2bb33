"""One system through the whole trace, in its own process (``python -m bench.peers.runner``).

The parent (``bench.peers``) builds the models and writes a spec; this process pins
itself (the load driver) to the driver's CPUs, starts the system through its adapter,
checks every model's answer against the reference, replays a warm-up and then every
offered-load level of the trace, open-loop, sampling the system's memory (PSS of its
process trees) as it goes, and writes one JSON result. A system whose adapter asks for
it runs, with this driver, inside ``unshare -n`` (a private network namespace with only
loopback up), so nothing it opens is reachable from outside.

    .venv/bin/python -m bench.peers.runner --system ray --quick   # an adapter's smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import loadgen
from bench.peers import registry
from bench.peers import workload as wl
from bench.peers.base import REPO, Budget, PeerModel, Running, tree_memory_bytes

MAX_IN_FLIGHT = 4000
REQUEST_TIMEOUT_S = 10.0
MAX_LATENESS_S = 0.05


@dataclass(frozen=True)
class Spec:
    """What every system replays: the models (``models_dir/models.json``), the budget,
    and the trace's parameters (the trace itself is rebuilt from them: seeded)."""

    models_dir: str
    cpus: str
    threads: int
    model_memory_bytes: int
    driver_cpus: str
    capacity_rps: float
    levels: list[float]  # offered load as fractions of capacity_rps
    level_s: float
    warmup_s: float
    warmup_level: float
    seed: int
    zipf_s: float
    workdir: str

    @property
    def budget(self) -> Budget:
        return Budget(self.cpus, self.threads, self.model_memory_bytes)

    def trace(self, models: Sequence[PeerModel]) -> tuple[wl.Level, list[wl.Level]]:
        # one pair of popularity rankings (A, B) for the warm-up and every level, arrivals
        # seeded per level; each level begins where the one before ended: A->B, B->A, A->B, ...
        warm = wl.level(models, self.warmup_level * self.capacity_rps, self.warmup_s, self.seed, self.zipf_s,
                        popularity_seed=self.seed)
        levels = [wl.level(models, f * self.capacity_rps, self.level_s, self.seed + 1 + i, self.zipf_s,
                           popularity_seed=self.seed, shifted_first=i % 2 == 0)
                  for i, f in enumerate(self.levels)]
        return warm, levels


# ---------------------------------------------------------------- models on disk


def save_models(models: Sequence[PeerModel], root: Path) -> Path:
    rows = []
    for m in models:
        np.save(m.path.parent / "sample_input.npy", m.sample_input)
        np.save(m.path.parent / "sample_output.npy", m.sample_output)
        row = {k: v for k, v in asdict(m).items() if k not in ("sample_input", "sample_output")}
        row["path"] = str(m.path)
        rows.append(row)
    out = root / "models.json"
    out.write_text(json.dumps(rows, indent=1))
    return out


def load_models(root: Path) -> list[PeerModel]:
    out = []
    for row in json.loads((root / "models.json").read_text()):
        path = Path(row.pop("path"))
        row["input_shape"] = tuple(row["input_shape"])
        out.append(PeerModel(path=path, sample_input=np.load(path.parent / "sample_input.npy"),
                             sample_output=np.load(path.parent / "sample_output.npy"), **row))
    return out


# ---------------------------------------------------------------- measuring


class MemorySampler:
    """Peak memory (PSS) of the system's process trees, sampled every ``interval_s`` on a thread."""

    def __init__(self, running: Running, interval_s: float = 0.5) -> None:
        self._running, self._interval = running, interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_memory_bytes(self._running.pids()))
            self._stop.wait(self._interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_memory_bytes(self._running.pids()))


@dataclass
class LevelResult:
    fraction: float
    offered_rps: float
    duration_s: float
    summary: dict
    statuses: dict[str, int]  # non-OK answers by status, with an example message each
    examples: dict[str, str]
    counters: dict[str, float]  # what the system reports over the level (deltas)
    peak_memory_bytes: int
    goodput_rps: float
    attainment: float | None  # within SLO / sent (refusals count as misses)
    admitted_attainment: float | None  # within SLO / admitted (refusals excluded)


def level_result(fraction: float, lv: wl.Level, run: loadgen.Run, slos: dict[str, float],
                 counters: dict[str, float], peak: int) -> LevelResult:
    s = loadgen.summarize(run.records, slos, lv.duration_s)
    bad = [r for r in run.records if r.outcome is not loadgen.Outcome.OK]
    statuses = Counter(f"{r.outcome.value} ({r.status})" for r in bad)
    examples = {f"{r.outcome.value} ({r.status})": r.message for r in bad}
    return LevelResult(fraction, lv.requests / lv.duration_s, lv.duration_s, asdict(s), dict(statuses), examples,
                       counters, peak, s.goodput_rps, s.ok_within_slo / s.sent if s.sent else None,
                       s.slo_attainment)


def _counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _counters(running: Running) -> dict[str, float]:
    try:
        return dict(running.counters())
    except Exception:  # noqa: BLE001 - a counter the system cannot give is left out, not a failed run
        return {}


def check_models(running: Running, models: Sequence[PeerModel]) -> dict[str, str]:
    """Each model's answer to its sample against the reference: "ok", or what went wrong
    (a system that does not host a model says so here)."""
    out = {}
    for m in models:
        try:
            got = np.asarray(running.infer(m, m.sample_input), np.float32)
            ok = got.shape == m.sample_output.shape and np.allclose(got, m.sample_output, rtol=1e-3, atol=1e-4)
            out[m.name] = "ok" if ok else f"wrong answer (shape {got.shape})"
        except Exception as exc:  # noqa: BLE001 - recorded per model
            out[m.name] = f"{type(exc).__name__}: {str(exc)[:160]}"
    return out


@dataclass
class SystemResult:
    system: str
    label: str
    settings: dict[str, str]
    capabilities: dict[str, str]
    checks: dict[str, str]
    start_s: float
    warmup: LevelResult | None
    levels: list[LevelResult] = field(default_factory=list)
    error: str | None = None
    trace_digest: str = ""


def run_system(name: str, spec: Spec) -> SystemResult:
    peer = registry.peer(name)
    models = load_models(Path(spec.models_dir))
    slos = {m.name: m.slo_ms for m in models}
    warm, levels = spec.trace(models)
    result = SystemResult(name, peer.label, peer.settings(models, spec.budget), peer.capabilities(), {}, 0.0, None,
                          trace_digest=wl.trace_digest([warm, *levels]))
    workdir = Path(spec.workdir) / name
    shutil.rmtree(workdir, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        with peer.serve(workdir, models, spec.budget) as running:
            result.start_s = time.perf_counter() - t0
            result.checks = check_models(running, models)
            for i, lv in enumerate([warm, *levels]):
                streams = [running.stream(m, lv.schedules[m.name]) for m in models if lv.schedules[m.name]]
                before = _counters(running)
                with MemorySampler(running) as mem:
                    run = loadgen.run(streams, duration_s=lv.duration_s, max_in_flight=MAX_IN_FLIGHT,
                                      request_timeout_s=REQUEST_TIMEOUT_S, max_lateness_s=MAX_LATENESS_S)
                frac = spec.warmup_level if i == 0 else spec.levels[i - 1]
                res = level_result(frac, lv, run, slos, _counter_delta(before, _counters(running)), mem.peak)
                if i == 0:
                    result.warmup = res
                else:
                    result.levels.append(res)
                print(f"[{name}] level {frac:g} ({res.offered_rps:.0f} req/s): goodput {res.goodput_rps:.1f}/s, "
                      f"attainment {_pct(res.attainment)}, p99 {_ms(res.summary['p99_ms'])} ms, "
                      f"peak memory {mem.peak / 2**20:.0f} MiB", flush=True)
    except Exception as exc:  # noqa: BLE001 - one system failing is a result, the others still run
        import traceback

        result.error = f"{type(exc).__name__}: {exc}"[:2000]
        traceback.print_exc()
    return result


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


# ---------------------------------------------------------------- one system in its own process


def child_command(name: str, spec_path: Path, out: Path, netns: bool) -> list[str]:
    cmd = [sys.executable, "-m", "bench.peers.runner", "--system", name, "--spec", str(spec_path), "--out", str(out)]
    if not netns:
        return cmd
    inner = "ip link set lo up && exec " + shlex.join(cmd)
    return ["unshare", "--net", "--", "sh", "-c", inner]


def run_in_child(name: str, spec: Spec, out: Path, log: Path, timeout_s: float) -> SystemResult:
    """Install the system (with the network: its packages), then run it in a child process
    (inside a private network namespace where its adapter asks for one)."""
    peer = registry.peer(name)
    peer.install()
    spec_path = out.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(asdict(spec)))
    cmd = child_command(name, spec_path, out, peer.needs_netns)
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, timeout=timeout_s, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    if not out.exists():
        return SystemResult(name, peer.label, {}, {}, {}, 0.0, None,
                            error=f"the run exited {proc.returncode} without a result; see {log}")
    return result_from_json(json.loads(out.read_text()))


def result_from_json(d: dict) -> SystemResult:
    def lv(x: dict | None) -> LevelResult | None:
        return None if x is None else LevelResult(**x)

    levels = [lv(x) for x in d.pop("levels")]
    warm = lv(d.pop("warmup"))
    return SystemResult(warmup=warm, levels=[x for x in levels if x is not None], **d)


HOST_OVERHEAD_BYTES = 48 * 2**20


def model_memory_for(models: Sequence[PeerModel], fraction: float) -> int:
    """The memory budget in which about ``fraction`` of the models fit at once, by a
    resident size of twice the weights (runtimes keep the file's and their own packed copy
    while loading) plus a sandboxed model host's own private pages: inferplex charges a
    model what its host holds, measured (40 MB of weights cost it ~135 MB). Each system
    turns the same bytes into its own count of models by its own per-model cost."""
    return int(fraction * sum(2 * m.weight_bytes + HOST_OVERHEAD_BYTES for m in models))


def quick_spec(tmp: Path, levels: Sequence[float] = (0.05, 0.15), level_s: float = 4.0,
               kinds: Sequence[str] = tuple(wl.KINDS)) -> Spec:
    """A tiny trace over one copy of each kind, in both formats (10 models): an adapter's
    smoke run, and the test's (with fewer kinds)."""
    models = wl.build_models(tmp / "models", copies=1, kinds=kinds)
    save_models(models, tmp / "models")
    budget_bytes = model_memory_for(models, 1 / 3)
    return Spec(str(tmp / "models"), "1", 1, budget_bytes, "0", wl.capacity_rps(models), list(levels), level_s,
                2.0, levels[0], 11, 1.0, str(tmp / "work"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", required=True, choices=sorted(registry.SYSTEMS))
    p.add_argument("--spec", type=Path, help="written by bench.peers (omit with --quick)")
    p.add_argument("--out", type=Path, help="the result's JSON")
    p.add_argument("--quick", action="store_true", help="a tiny trace in a temporary folder; prints the result")
    args = p.parse_args(argv)
    if args.quick:
        with tempfile.TemporaryDirectory(prefix=f"peers-{args.system}-") as tmp:
            spec = quick_spec(Path(tmp))
            res = run_in_child(args.system, spec, Path(tmp) / "result.json", Path(tmp) / "run.log", 900)
            print((Path(tmp) / "run.log").read_text()[-4000:])
            print(json.dumps({"checks": res.checks, "error": res.error,
                              "levels": [{"offered": x.offered_rps, "goodput": x.goodput_rps,
                                          "attainment": x.attainment, "statuses": x.statuses,
                                          "examples": x.examples, "p50": x.summary["p50_ms"],
                                          "p99": x.summary["p99_ms"], "memory_mib": x.peak_memory_bytes / 2**20}
                                         for x in res.levels]}, indent=1))
            return 0 if res.error is None else 1
    if args.spec is None or args.out is None:
        p.error("--spec and --out are needed (or --quick)")
    spec = Spec(**json.loads(args.spec.read_text()))
    loadgen.pin_driver(spec.driver_cpus)
    res = run_system(args.system, spec)
    args.out.write_text(json.dumps(asdict(res), indent=1))
    return 0 if res.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
