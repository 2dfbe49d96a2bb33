"""Per-write cost of the embedded store as it fills (issue 11: "creating a tenant slows from
2.8 ms to 12 ms over 1,000 tenants").

    python -m bench.store_embedded

Side by side in one run, on the same disk (a temp dir under --dir): the embedded store
(SQLite, WAL, fsync on every commit) creating --keys tenant records one after another, as
``TenantService.create_tenant`` writes them (``store.create`` of a real ``Tenant`` record),
next to the old way of persisting (the whole key set rewritten as one JSON document, fsynced
and renamed, after every write). Reports the per-write time around 0, half and all of the
keys (median and p90 of a window of writes) and the ratio last/first, which should stay near
1 for a store whose writes are incremental. Writes bench/results/store_embedded.{md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

from bench._common import pct, pyplot
from store import keys
from store.embedded import EmbeddedStore
from tenants.service import Tenant

RESULTS = Path(__file__).resolve().parent / "results"


def _record(i: int) -> tuple[str, bytes]:
    name = f"tenant-{i:05d}"
    tenant = Tenant(name=name, display_name=f"Tenant number {i}", created_at=time.time())
    return keys.tenant(name), tenant.model_dump_json().encode()


async def _embedded(folder: Path, n: int) -> list[float]:
    store = EmbeddedStore(folder / "state.json")
    times: list[float] = []
    try:
        for i in range(n):
            key, value = _record(i)
            t0 = time.perf_counter()
            rev = await store.create(key, value)
            times.append(time.perf_counter() - t0)
            assert rev is not None
    finally:
        await store.close()
    return times


def _whole_file_rewrite(folder: Path, n: int) -> list[float]:
    """What the JSON-document store did per write: every key serialised, fsynced, renamed."""
    path = folder / "state-v1.json"
    data: dict[str, bytes] = {}
    times: list[float] = []
    for i in range(n):
        key, value = _record(i)
        t0 = time.perf_counter()
        data[key] = value
        doc = {"format": 1, "revision": i + 2, "next_lease": 1,
               "keys": [{"key": k, "value": v.decode(), "enc": "utf8", "revision": j + 2, "lease": None,
                         "created": j + 2} for j, (k, v) in enumerate(sorted(data.items()))]}
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".state-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        times.append(time.perf_counter() - t0)
    return times


def _windows(times: list[float], window: int) -> list[tuple[int, float, float]]:
    """(keys present before the window, median ms, p90 ms) at 0, n/2 and n - window."""
    n = len(times)
    out = []
    for start in (0, max(0, n // 2 - window // 2), max(0, n - window)):
        chunk = times[start:start + window]
        out.append((start, pct(chunk, 50) * 1e3, pct(chunk, 90) * 1e3))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=1000, help="tenant records to create (default 1000)")
    p.add_argument("--window", type=int, default=50, help="writes per reported window (default 50)")
    p.add_argument("--dir", type=Path, default=None, help="where the files go (default: the temp dir)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-store-") as tmp:
        folder = Path(tmp)
        (folder / "sqlite").mkdir()
        (folder / "json").mkdir()
        runs = {
            f"embedded store (SQLite {sqlite3.sqlite_version}, WAL)": asyncio.run(
                _embedded(folder / "sqlite", args.keys)),
            "whole-file JSON rewrite (the old store)": _whole_file_rewrite(folder / "json", args.keys),
        }
        disk = str(folder)
    lines = [
        "# Embedded store: per-write time as it fills",
        "",
        f"Command: `python -m bench.store_embedded --keys {args.keys} --window {args.window}` — "
        f"{platform.machine()}, Python {platform.python_version()}; files under {disk}; "
        f"{args.keys} tenant records created one after another; median and p90 of {args.window} "
        "writes starting at each point.",
        "",
        "| persistence | keys present | median ms | p90 ms |",
        "|---|---:|---:|---:|",
    ]
    ratios = {}
    for name, times in runs.items():
        windows = _windows(times, args.window)
        for start, median, p90 in windows:
            lines.append(f"| {name} | {start} | {median:.3f} | {p90:.3f} |")
        ratios[name] = windows[-1][1] / windows[0][1]
    lines += ["", "| persistence | median at the end / at the start |", "|---|---:|"]
    lines += [f"| {name} | {ratio:.2f} |" for name, ratio in ratios.items()]
    lines += ["", "Target (issue 11): a write's cost does not grow with the keys already stored."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store_embedded.md").write_text("\n".join(lines) + "\n")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, times in runs.items():
        step = max(1, args.window // 5)
        xs = list(range(0, len(times) - args.window + 1, step))
        ax.plot(xs, [pct(times[x:x + args.window], 50) * 1e3 for x in xs], label=name)
    ax.set_xlabel("keys already stored")
    ax.set_ylabel(f"per-write time, ms (median of {args.window})")
    ax.set_ylim(bottom=0)
    ax.set_title("Embedded store: a write's cost as the store fills")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "store_embedded.png", dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
