"""CPU pinning: predictable execute times need a worker that other processes do not preempt.

``--cpus 1`` or ``--cpus 0,2-3`` pins the process (and the threads it starts) to those CPUs
with ``sched_setaffinity``; operators give workers cores of their own and the control plane
the rest, as serving systems isolate cores for latency-critical work.
"""

from __future__ import annotations

import os


def parse_cpus(text: str) -> set[int]:
    """``"0,2-3"`` -> ``{0, 2, 3}``; a clear error for anything else."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                cpus.update(range(lo, hi + 1))
            else:
                cpus.add(int(part))
    except ValueError:
        raise ValueError(f"invalid CPU list {text!r}: use numbers and ranges like '1' or '0,2-3'") from None
    if not cpus or min(cpus) < 0:
        raise ValueError(f"invalid CPU list {text!r}: use numbers and ranges like '1' or '0,2-3'")
    return cpus


def pin_to(cpus: set[int]) -> None:
    """Pin this process; a child started later may pin itself elsewhere (no inheritance limit)."""
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        raise ValueError(f"cannot pin to CPUs {sorted(cpus)}: {exc.strerror} (this machine has "
                         f"{os.cpu_count()} CPUs)") from None
