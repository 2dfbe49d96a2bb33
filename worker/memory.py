"""The worker's memory budget.

How a model's bytes are measured: loads are serialized, so the process's
resident set size (``/proc/self/statm``) read just before and just after a
load (including the warm-up runs; the first is when ONNX Runtime's arena grows) is
that load's cost. RSS is noisy (allocator reuse after an unload can make a
delta near zero), so a model is charged ``max(measured delta, file bytes)``.
Before loading, the file bytes are the estimate: if even that does not fit,
the load is refused without touching the runtime. The worker never evicts.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

from kserve.errors import ResourceExhausted

_PAGE = os.sysconf("SC_PAGE_SIZE")


_M_MMAP_THRESHOLD = -3


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def steady_allocator() -> None:
    """Make RSS track live memory: glibc otherwise raises its mmap threshold after the
    first large free, and later large buffers (a model's weights while parsing) stay in
    the heap as RSS after they are freed, so a reload would measure twice a first load."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def rss_bytes() -> int:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)  # hand freed heap pages back first: we measure what is kept
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * _PAGE


@dataclass
class MemoryBudget:
    budget: int
    charged: dict[str, int] = field(default_factory=dict)  # model name -> bytes

    @property
    def used(self) -> int:
        return sum(self.charged.values())

    @property
    def free(self) -> int:
        return self.budget - self.used

    def check(self, model: str, needed: int, releasing: int = 0) -> None:
        """Refuse when ``needed`` does not fit; ``releasing`` is what a reload will free."""
        free = self.free + releasing
        if needed > free:
            raise ResourceExhausted(
                f"insufficient memory budget to load '{model}': needs {needed} bytes, "
                f"{max(free, 0)} free of {self.budget} budget"
            )

    def charge(self, model: str, nbytes: int) -> None:
        self.charged[model] = nbytes

    def release(self, model: str) -> int:
        return self.charged.pop(model, 0)

    def snapshot(self) -> dict[str, object]:
        return {"budget_bytes": self.budget, "used_bytes": self.used, "free_bytes": self.free,
                "models": dict(self.charged)}
