"""``inferplex sim``: run a workload through inferplex's scheduler and placement cores on
simulated GPUs, for capacity planning; policies side by side.

    inferplex sim --models 10000 --instances 100 --instance-memory 32GiB --duration 1h \\
        --policy all --seed 1 --out sim-results

Writes ``results.md`` (a table, one column per policy), ``results.json`` and PNG plots
into ``--out``. Sizes take B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB;
durations a number with s, m or h (90s, 15m, 1h; a bare number is seconds).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from placement.cluster import DEFAULT_EVICT_MARGIN

POLICY_NAMES = ("inferplex", "lru", "static")
WORKLOADS = ("azure", "poisson", "gamma")
PROFILE_SETS = ("v100", "a100", "gpu", "measured")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h)?")


def parse_size(text: str) -> int:
    """'32GiB' -> 34359738368; a plain number is bytes."""
    m = _SIZE.fullmatch(text.strip().lower())
    if m is None or m.group(2) not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use a number and a unit, e.g. 32GiB, 16GB, 512MiB")
    n = int(float(m.group(1)) * _UNITS[m.group(2)])
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the size must be at least 1 byte")
    return n


def parse_duration(text: str) -> float:
    """'1h' -> 3600, '90s' -> 90, '15m' -> 900; a plain number is seconds."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 90s, 15m or 1h")
    s = float(m.group(1)) * {None: 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not s > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be above 0")
    return s


def evict_margin(text: str) -> float | None:
    """``none``, or a number >= 1 (``PlannerConfig.evict_margin``)."""
    if text.lower() == "none":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write a number >= 1, or none") from None
    if not v >= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1 (or none)")
    return v


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be above 0")
        return v
    return parse


def policies(chosen: list[str] | None) -> list[str]:
    if not chosen:
        return ["inferplex"]
    out: list[str] = []
    for p in chosen:
        for name in (POLICY_NAMES if p == "all" else (p,)):
            if name not in out:
                out.append(name)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=_positive(int), default=1000, help="models in the workload (default 1000)")
    p.add_argument("--instances", type=_positive(int), default=10, help="simulated GPUs (default 10)")
    p.add_argument("--instance-memory", type=parse_size, default=parse_size("32GiB"),
                   help="model memory per instance, e.g. 32GiB (default)")
    p.add_argument("--cache", type=parse_size, default=None,
                   help="each instance's local artifact cache (default 4x its memory)")
    p.add_argument("--duration", type=parse_duration, default=3600.0, help="simulated time, e.g. 1h (default)")
    p.add_argument("--policy", action="append", choices=(*POLICY_NAMES, "all"),
                   help="inferplex, lru or static; repeat it, or 'all' (default inferplex)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=_positive(float), default=None,
                   help="mean requests per second in all (default 20 per instance)")
    p.add_argument("--workload", choices=WORKLOADS, default="azure",
                   help="azure (Azure-Functions-shaped, default), poisson or gamma")
    p.add_argument("--cv", type=_positive(float), default=4.0,
                   help="gamma: the inter-arrival coefficient of variation (default 4)")
    p.add_argument("--zipf", type=_positive(float), default=1.0, help="poisson, gamma: Zipf popularity exponent")
    p.add_argument("--profiles", choices=PROFILE_SETS, default="v100",
                   help="model profiles: v100 or a100 GPU tables (sim/profiles.py, cited), both (gpu), "
                        "or measured (this machine's CPU)")
    p.add_argument("--trace-dir", type=Path, default=None,
                   help="the Azure Functions 2019 trace's CSV files (sim/TRACE.md); replaces --workload")
    p.add_argument("--noise-cv", type=float, default=0.05,
                   help="execute and load time noise, coefficient of variation (default 0.05)")
    p.add_argument("--evict-margin", type=evict_margin, default=DEFAULT_EVICT_MARGIN,
                   help="policy inferplex: optional loads evict only copies this many times cheaper than "
                        f"the newcomer; none: only free memory (INFERPLEX_PLACEMENT_EVICT_MARGIN; default {DEFAULT_EVICT_MARGIN:g})")
    p.add_argument("--out", type=Path, required=True, help="results folder (created)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("sim", help="simulate a cluster running inferplex's scheduler and placement",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=main)


def _profiles(name: str) -> list[Any]:
    from sim.profiles import GPU_PROFILES, measured_profiles

    if name == "measured":
        return list(measured_profiles().values())
    if name == "gpu":
        return list(GPU_PROFILES.values())
    return [p for n, p in GPU_PROFILES.items() if n.endswith(f"-{name}")]


def workload(args: argparse.Namespace) -> Any:
    from sim import workload as wl

    rate = args.rate if args.rate is not None else 20.0 * args.instances
    profs = _profiles(args.profiles)
    if args.trace_dir is not None:
        from sim.azure_trace import from_azure_csv

        files = sorted(args.trace_dir.glob("invocations_per_function_md.anon.d*.csv*"))
        if not files:
            raise SystemExit(f"inferplex sim: no invocations_per_function_md.anon.dNN.csv files in "
                             f"{args.trace_dir}: point --trace-dir at the unpacked trace (sim/TRACE.md)")
        w = from_azure_csv(files, args.models, args.seed, profiles=profs,
                           memory_paths=sorted(args.trace_dir.glob("app_memory_percentiles.anon.d*.csv*")),
                           duration_paths=sorted(args.trace_dir.glob("function_durations_percentiles.anon.d*.csv*")))
        if w.duration_s > args.duration:
            w.duration_s = args.duration
        return w
    if args.workload == "azure":
        return wl.azure_like(args.models, args.duration, rate, args.seed, profiles=profs)
    if args.workload == "poisson":
        return wl.poisson_workload(args.models, args.duration, rate, args.seed, zipf_s=args.zipf, profiles=profs)
    return wl.gamma_workload(args.models, args.duration, rate, args.seed, cv=args.cv, zipf_s=args.zipf,
                             profiles=profs)


class ProgressBar:
    """``[#####-----] 12:00 / 60:00 simulated  48,000 events/s`` on one stderr line."""

    def __init__(self, label: str, stream: Any = None, width: int = 30) -> None:
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self._last = 0.0

    def __call__(self, t: float, total: float, events: int, wall_s: float) -> None:
        now = time.monotonic()
        if t < total and now - self._last < 0.2:
            return
        self._last = now
        done = int(self.width * t / total) if total > 0 else self.width
        rate = events / wall_s if wall_s > 0 else 0.0
        self.stream.write(f"\r{self.label:>9} [{'#' * done}{'-' * (self.width - done)}] "
                          f"{_clock(t)} / {_clock(total)} simulated  {rate:,.0f} events/s ")
        if t >= total:
            self.stream.write("\n")
        self.stream.flush()


def _clock(s: float) -> str:
    m, sec = divmod(int(s), 60)
    return f"{m // 60}:{m % 60:02d}:{sec:02d}" if m >= 60 else f"{m}:{sec:02d}"


def main(args: argparse.Namespace) -> int:
    from sim import report
    from sim.runner import run

    if args.noise_cv < 0:
        raise SystemExit("inferplex sim: --noise-cv must be >= 0")
    results = []
    for policy in policies(args.policy):
        w = workload(args)  # a fresh generator per policy: the same seed, the same requests
        bar = None if args.quiet else ProgressBar(policy)
        results.append(run(w, instances=args.instances, instance_memory=args.instance_memory, policy=policy,
                           seed=args.seed, cache_bytes=args.cache, noise_cv=args.noise_cv,
                           evict_margin=args.evict_margin, progress=bar))
    written = report.write(results, args.out)
    print(report.table(results))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
