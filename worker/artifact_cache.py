"""The worker's local artifact cache: the files of recently unloaded models, kept on disk
by content digest (modelfiles/artifacts.py) so that loading them again needs no transfer.

Bounded by its own byte budget (``--cache-bytes``, 0 turns it off), least recently used
out first. A model's files are in the cache or in use by the loaded model, never both:
an unload (or a reload that replaces them) hands its folder in, a load by digest takes
it out, by rename within the worker's own folder. Nothing in the cache is trusted: a
folder taken out is hashed again, and one whose digest is not its name is removed and
counted as corrupt, and the load answered as a miss (the caller then sends the files).

Thread-safe: loads take and hand in on the repository's helper thread while the
servers read ``snapshot()`` on theirs.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelfiles.artifacts import is_digest, tree_digest

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(slots=True)
class CacheCounters:
    hits: int = 0  # loads by digest served from the cache
    misses: int = 0  # loads by digest it could not serve (absent or corrupt)
    corrupt: int = 0  # entries whose files no longer had their digest (removed)
    evictions: int = 0  # entries removed to make room


class ArtifactCache:
    def __init__(self, folder: Path, budget_bytes: int) -> None:
        self.folder = folder
        self.budget_bytes = max(budget_bytes, 0)
        self.counters = CacheCounters()
        self._entries: OrderedDict[str, int] = OrderedDict()  # digest -> bytes, oldest first
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._entries.values())

    def __contains__(self, digest: str) -> bool:
        with self._lock:
            return digest in self._entries

    def admit(self, digest: str, folder: Path) -> bool:
        """Hand in ``folder`` (the files of ``digest``, laid out as loaded); it is moved
        into the cache, or removed when it does not fit. True if kept."""
        if not self.enabled or not is_digest(digest):
            shutil.rmtree(folder, ignore_errors=True)
            return False
        size = folder_bytes(folder)
        with self._lock:
            if size > self.budget_bytes or digest in self._entries:
                if digest in self._entries:
                    self._entries.move_to_end(digest)
                shutil.rmtree(folder, ignore_errors=True)
                return False
            while self._entries and sum(self._entries.values()) + size > self.budget_bytes:
                victim, _ = self._entries.popitem(last=False)
                shutil.rmtree(self._path(victim), ignore_errors=True)
                self.counters.evictions += 1
                log.info("artifact cache: evicted %s to make room for %s", victim[:12], digest[:12])
            os.rename(folder, self._path(digest))
            self._entries[digest] = size
        log.info("artifact cache: kept %s (%d bytes, %d of %d used)", digest[:12], size,
                 self.used_bytes, self.budget_bytes)
        return True

    def take(self, digest: str, dest: Path) -> bool:
        """Move the files of ``digest`` to ``dest`` (absent, or an empty folder) and
        verify them there; False (a miss) when absent or corrupt."""
        with self._lock:
            present = is_digest(digest) and self._entries.pop(digest, None) is not None
            if not present:
                self.counters.misses += 1
                return False
            try:
                os.rename(self._path(digest), dest)
            except OSError as exc:  # its folder went missing under us: as corrupt as it gets
                log.warning("artifact cache: cannot take %s: %s", digest[:12], exc)
        actual = folder_digest(dest)
        with self._lock:
            if actual != digest:
                self.counters.corrupt += 1
                self.counters.misses += 1
            else:
                self.counters.hits += 1
        if actual != digest:
            log.warning("artifact cache: the files kept for %s no longer have that digest; removed",
                        digest[:12])
            shutil.rmtree(dest, ignore_errors=True)
            return False
        return True

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /v2/inferplex/memory`` reports as ``cache``: the counters, and the
        digests it holds (the control plane's planner counts a load of one as warm)."""
        with self._lock:
            c = self.counters
            return {"budget_bytes": self.budget_bytes, "used_bytes": sum(self._entries.values()),
                    "entries": len(self._entries), "hits": c.hits, "misses": c.misses,
                    "corrupt": c.corrupt, "evictions": c.evictions, "digests": sorted(self._entries)}

    def _path(self, digest: str) -> Path:
        return self.folder / digest


def cache_snapshot(cache: ArtifactCache | None) -> dict[str, Any]:
    """``cache.snapshot()``, or that of a cache that is off."""
    if cache is not None:
        return cache.snapshot()
    return {"budget_bytes": 0, "used_bytes": 0, "entries": 0, **asdict(CacheCounters()), "digests": []}


def _files(folder: Path) -> list[tuple[str, Path, int]]:
    """Every file under ``folder`` as (posix relative path, path, size), sorted by path; a
    link or anything but a plain file or folder is refused (a cache never holds one)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise ValueError(f"{path} is not a plain file")
            out.append((path.relative_to(folder).as_posix(), path, os.lstat(path).st_size))
    return sorted(out)


def folder_bytes(folder: Path) -> int:
    try:
        return sum(size for _, _, size in _files(folder))
    except (OSError, ValueError):
        return 0


def folder_digest(folder: Path) -> str | None:
    """The digest of the files under ``folder`` as modelfiles.artifacts defines it, None
    when they cannot all be read as plain files."""

    def chunks(path: Path) -> Iterator[bytes]:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk

    try:
        return tree_digest((rel, size, chunks(path)) for rel, path, size in _files(folder))
    except (OSError, ValueError):
        return None
