"""What the model sandbox and the instance credential cost, and how fast a runaway
execution lets go of the worker (issue 8, "Benchmark").

Run: ``.venv/bin/python -m bench.sandbox_overhead`` (about 3 minutes). Writes
``bench/results/sandbox_overhead.md``, ``.json`` and ``.png``.

1. Request latency, before and after, in one run: the worker as of commit 02d3bbb
   (in-process runtimes, no credential; started from a git worktree of that commit)
   against this tree's worker with a credential, and without one (the sandbox alone);
   the MLP at batch 1 and the CNN at batch 8 over tritonclient HTTP and gRPC, in
   interleaved small blocks so machine noise hits every variant alike. The client is
   pinned to one CPU, the workers (and so their model hosts) to the other.
2. Runaway executions (bench/_runaway.py): how long past its deadline the worker is held,
   on both stop paths (ONNX: the runtime stops itself; TorchScript: the host is killed and
   restarted), and when the stopped model serves again.
3. Start and load times and the memory each model is charged, before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from bench import _runaway
from bench._common import pct, pyplot
from bench._sandbox_workers import (
    AFTER,
    AFTER_OPEN,
    BEFORE,
    BEFORE_COMMIT,
    VARIANTS,
    Variant,
    cold_loads,
    memory_report,
    variants,
)
from bench.worker_overhead import WORKLOADS, Workload, _inputs, _measure
from kserve.restricted import DEFAULT_KEY, InstanceCredential

RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOLS = ("HTTP", "gRPC")
# small blocks (a fraction of a second each), many rounds: noise spreads over all variants
BLOCKS = (replace(WORKLOADS[0], requests_per_round=100), replace(WORKLOADS[1], requests_per_round=15))
DEADLINES_MS = (50, 100, 500)
TARGET_MS = 50.0
EXEC_MARGIN_MS = 10  # the worker's default --exec-margin-ms: the kill path's grace past a deadline
CLIENT_CPU, WORKER_CPU = 0, 1


def _callers(v: Variant, w: Workload) -> dict[str, Callable[[], Any]]:
    x = _inputs(w)
    http = httpclient.InferenceServerClient(v.worker.http_url)
    http_in = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    http_in.set_data_from_numpy(x)
    http_out = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]
    grpc = grpcclient.InferenceServerClient(v.worker.grpc_url)
    grpc_in = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    grpc_in.set_data_from_numpy(x)
    hh, gh = v.worker.http_headers(), v.worker.grpc_headers()
    return {"HTTP": lambda: http.infer(w.model, [http_in], outputs=http_out, headers=hh),
            "gRPC": lambda: grpc.infer(w.model, [grpc_in], headers=gh)}


def _same_answers(callers: dict[str, dict[str, Callable[[], Any]]]) -> None:
    """Every variant runs the same model: the same answer on both protocols."""
    answers = [c[p]().as_numpy("OUTPUT0") for c in callers.values() for p in PROTOCOLS]
    for got in answers[1:]:
        np.testing.assert_allclose(got, answers[0], rtol=1e-5, atol=1e-6)


def measure_latency(vs: dict[str, Variant], rounds: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    """workload label -> protocol -> variant -> latencies (s)."""
    callers = {w.label: {name: _callers(v, w) for name, v in vs.items()} for w in BLOCKS}
    for w in BLOCKS:
        _same_answers(callers[w.label])
        for by_protocol in callers[w.label].values():  # warm-up, not recorded
            for call in by_protocol.values():
                _measure(call, 2 * w.requests_per_round, [])
    out = {w.label: {p: {name: [] for name in vs} for p in PROTOCOLS} for w in BLOCKS}
    order = list(vs)
    for r in range(rounds):
        rotated = order[r % len(order):] + order[:r % len(order)]  # nobody always goes first
        for w in BLOCKS:
            for p in PROTOCOLS:
                for name in rotated:
                    _measure(callers[w.label][name][p], w.requests_per_round, out[w.label][p][name])
    return out


def _latency_stats(lat: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, Any]:
    return {label: {p: {name: {"n": len(s), "p50_ms": pct(s, 50) * 1e3, "p99_ms": pct(s, 99) * 1e3}
                        for name, s in by_variant.items()} for p, by_variant in by_protocol.items()}
            for label, by_protocol in lat.items()}


def run(rounds: int, trials: int, cold: int) -> dict[str, Any]:
    os.sched_setaffinity(0, {CLIENT_CPU})
    credential = InstanceCredential(DEFAULT_KEY, secrets.token_urlsafe(24))
    log_dir = Path(tempfile.mkdtemp(prefix="inferplex-bench-sandbox-"))
    print(f"worker logs in {log_dir}", file=sys.stderr)
    with variants(log_dir, str(WORKER_CPU), credential, tuple(w.model for w in BLOCKS)) as vs:
        latency = _latency_stats(measure_latency(vs, rounds))
        memory = {name: memory_report(v) for name, v in vs.items()}
        loads = {name: {"start_s": v.start_s, "first_load_s": v.first_load_s,
                        "cold_s": {w.model: cold_loads(v.worker, w.model, cold) for w in BLOCKS}}
                 for name, v in vs.items() if name != AFTER_OPEN}
        other = BLOCKS[0]
        trial_list = _runaway.run_trials(vs[AFTER].worker, other.model, _inputs(other), DEADLINES_MS, trials)
    return {"latency": latency, "memory": memory, "loads": loads, "runaway": _runaway.trial_stats(trial_list),
            "trials": [asdict(t) for t in trial_list]}


# ---------------------------------------------------------------- report


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def write_markdown(res: dict[str, Any], args: argparse.Namespace, seconds: float) -> str:
    lat, mem, loads, runaway = res["latency"], res["memory"], res["loads"], res["runaway"]
    lines = [
        "# Sandbox and credential overhead",
        "",
        f"`.venv/bin/python -m bench.sandbox_overhead --rounds {args.rounds} --trials {args.trials} "
        f"--cold {args.cold}` — one run took {seconds:.0f} s. Machine: {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, shared with "
        "other work. Client pinned to CPU 0, every worker (`--cpus 1 --threads 1`; its zygote and "
        "model hosts inherit the pinning) to CPU 1.",
        "",
        f"- **before**: `inferplex worker` at commit `{BEFORE_COMMIT}` (runtimes in the worker's process, "
        "no credential), run from a git worktree of that commit with the same venv.",
        "- **after**: this tree's worker: each model version in its own confined host process (forked "
        "from the zygote; Landlock + seccomp), tensors over a unix socket; every API but health "
        "behind the instance credential (`INFERPLEX_INSTANCE_RESTRICTED_KEY/VALUE`), sent by the client.",
        "- **after, no credential**: the same worker without a credential: the sandbox alone.",
        "",
        "## 1. Request latency",
        "",
        f"Sequential requests, {args.rounds} interleaved rounds of small blocks ("
        + ", ".join(f"{w.requests_per_round} × {w.label}" for w in BLOCKS)
        + " per variant and protocol, the variants' order rotated each round).",
        "",
        "| workload | protocol | variant | n | p50 ms | p99 ms | p50 added vs before | p50 ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, by_protocol in lat.items():
        for p, by_variant in by_protocol.items():
            base = by_variant[BEFORE]["p50_ms"]
            for name in VARIANTS:
                s = by_variant[name]
                added = "—" if name == BEFORE else f"{s['p50_ms'] - base:+.3f} ms"
                lines.append(f"| {label} | {p} | {name} | {s['n']} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | "
                             f"{added} | {s['p50_ms'] / base:.2f}x |")
    lines += ["", "Split of the added p50 (ms): sandbox = after-no-credential − before, credential = "
              "after − after-no-credential.", "",
              "| workload | protocol | total | sandbox | credential |", "|---|---|---:|---:|---:|"]
    for label, by_protocol in lat.items():
        for p, bv in by_protocol.items():
            b, a, o = (bv[n]["p50_ms"] for n in (BEFORE, AFTER, AFTER_OPEN))
            lines.append(f"| {label} | {p} | {a - b:+.3f} | {o - b:+.3f} | {a - o:+.3f} |")
    lines += ["", *_runaway.markdown(runaway, args.trials, TARGET_MS, EXEC_MARGIN_MS)]
    lines += ["## 3. Loads and memory", "",
              f"Cold load: {args.cold} loads (each then unloaded) of a model under a name the worker has "
              "not seen, client wall time of the repository load. First load: the first model a fresh "
              "worker loads (before: imports the runtime). Start: from the worker's process start until "
              "it answers ready on HTTP and gRPC (workers started one after another); the after-worker "
              "starts its zygote (and checks that a throwaway child can confine itself) before it is "
              "ready, so that cost is here and not in the first load.", "",
              "| model | variant | start ms | first load ms | cold load ms min / p50 / max |",
              "|---|---|---:|---:|---:|"]
    for w in BLOCKS:
        for name, ld in loads.items():
            c = [x * 1e3 for x in ld["cold_s"][w.model]]
            lines.append(f"| {w.model} | {name} | {ld['start_s'] * 1e3:.0f} | "
                         f"{ld['first_load_s'][w.model] * 1e3:.0f} | "
                         f"{min(c):.0f} / {pct(c, 50):.0f} / {max(c):.0f} |")
    roles = ("worker", "zygote", "model hosts")
    lines += ["", "Memory: what the worker charges each model against its budget "
              "(`GET /v2/inferplex/memory`; before: the worker's RSS growth over the load, after: the "
              "host's private bytes), and what its processes hold (MiB, /proc/<pid>/smaps_rollup, "
              "RSS / PSS / private; PSS splits shared pages among the processes that map them, so "
              "the PSS total is the memory the tree really uses).", "",
              "| variant | " + " | ".join(f"{w.model} charged" for w in BLOCKS) + " | "
              + " | ".join(roles) + " | PSS total |",
              "|---|" + "---:|" * (len(BLOCKS) + len(roles) + 1)]
    for name in VARIANTS:
        m = mem[name]
        procs = m["processes"]
        cells = []
        for role in roles:
            if role not in procs:
                cells.append("—")
                continue
            n, *sizes = procs[role]
            cells.append((f"({n}) " if role == "model hosts" else "") + " / ".join(_mib(x) for x in sizes))
        total = sum(procs[r][2] for r in procs)
        lines.append(f"| {name} | " + " | ".join(_mib(m["charged"][w.model]) for w in BLOCKS)
                     + f" | {' | '.join(cells)} | {_mib(total)} |")
    lines += ["", "The zygote is the sandbox's fixed cost, charged to no model; a host's pages still "
              "shared with the zygote (the runtimes' code and imports) are in its RSS but not in its "
              "private bytes, so not in its charge.", ""]
    return "\n".join(lines)


def write_plot(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    cells = [(label, p) for label in res["latency"] for p in PROTOCOLS]
    xs = np.arange(len(cells))
    for i, name in enumerate(VARIANTS):
        ax.bar(xs + (i - 1) * 0.27, [res["latency"][label][p][name]["p50_ms"] for label, p in cells], 0.27,
               label=name)
    ax.set_xticks(xs, [f"{label}\n{p}" for label, p in cells], fontsize=8)
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("request latency")
    ax.legend(fontsize=8)
    ax = axes[1]
    series = [(r, source) for r in _runaway.RUNAWAYS for source in _runaway.SOURCES]
    for i, (r, source) in enumerate(series):
        for j, d in enumerate(DEADLINES_MS):
            ys = [t["held_past_ms"] for t in res["trials"]
                  if (t["model"], t["source"], t["deadline_ms"]) == (r.model, source, d)]
            ax.scatter(np.full(len(ys), j + (i - (len(series) - 1) / 2) * 0.12), ys, s=8,
                       color=f"C{_runaway.RUNAWAYS.index(r)}", marker="osD"[_runaway.SOURCES.index(source)],
                       label=f"{r.platform}, {source}" if j == 0 else None)
    ax.axhline(TARGET_MS, color="red", linestyle="--", linewidth=1, label=f"target {TARGET_MS:.0f} ms")
    ax.set_xticks(range(len(DEADLINES_MS)), [f"{d} ms" for d in DEADLINES_MS])
    ax.set_xlabel("deadline")
    ax.set_ylabel("worker held past deadline (ms)")
    ax.set_title("runaway execution")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax = axes[2]
    xs = np.arange(len(BLOCKS))
    for i, name in enumerate((BEFORE, AFTER)):
        ax.bar(xs + (i - 0.5) * 0.4, [res["memory"][name]["charged"][w.model] / 2**20 for w in BLOCKS], 0.4,
               label=name)
    ax.set_xticks(xs, [w.model for w in BLOCKS])
    ax.set_ylabel("charged (MiB)")
    ax.set_title("memory charged per model")
    ax.legend(fontsize=8)
    fig.suptitle("inferplex worker: model sandbox + instance credential, before vs after")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--trials", type=int, default=8,
                        help="runaway trials per model, deadline and source")
    parser.add_argument("--cold", type=int, default=5, help="cold loads per model and variant")
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two CPUs (client on one, workers on the other)")
    t0 = time.monotonic()
    results = run(args.rounds, args.trials, args.cold)
    seconds = time.monotonic() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = write_markdown(results, args, seconds)
    (RESULTS / "sandbox_overhead.md").write_text(md)
    (RESULTS / "sandbox_overhead.json").write_text(json.dumps(results, indent=2))
    write_plot(results, RESULTS / "sandbox_overhead.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
