"""Content-addressed model bytes on a local directory.

Layout: ``<root>/sha256/<first two hex>/<sha256>`` for stored files and
``<root>/tmp/`` for uploads in flight (same filesystem, so accepting an upload is
one atomic rename; identical bytes are stored once). Metadata never lives here:
the catalog in the state store says which sha256 a model version uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from kserve.errors import NotFound, PayloadTooLarge

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"model file is over the upload limit of {max_bytes} bytes ({max_bytes / 2**20:.1f} MiB): "
        "upload a smaller model or ask the operator to raise INFERPLEX_MAX_UPLOAD_BYTES"
    )


@dataclass(frozen=True, slots=True)
class StagedUpload:
    """A fully received upload, hashed, not yet accepted."""

    path: Path
    sha256: str
    size_bytes: int


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._blobs = root / "sha256"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._blobs.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self._blobs / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def read(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"model bytes {sha256} are missing from the artifact store") from None

    async def stage(self, chunks: AsyncIterator[bytes], max_bytes: int) -> StagedUpload:
        """Write chunks to a temp file while hashing; past ``max_bytes`` stop reading and
        raise PayloadTooLarge. The temp file is removed on any failure."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        path = Path(name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise too_large(max_bytes)
                    digest.update(chunk)
                    # small synchronous writes: the OS page cache absorbs them
                    f.write(chunk)  # noqa: ASYNC230
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        return StagedUpload(path=path, sha256=digest.hexdigest(), size_bytes=size)

    def discard(self, staged: StagedUpload) -> None:
        staged.path.unlink(missing_ok=True)

    def commit(self, staged: StagedUpload) -> Path:
        """Move a staged upload to its content address (a no-op for bytes already stored)."""
        final = self.path(staged.sha256)
        if final.is_file():
            staged.path.unlink(missing_ok=True)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(staged.path, 0o444)
        os.replace(staged.path, final)
        return final

    def delete(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        log.info("removed artifact %s", sha256)
        return True

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove uploads a crash left behind. Only old ones: replicas sharing this directory
        may have uploads in flight right now."""
        removed = 0
        cutoff = time.time() - older_than_s
        for leftover in self._tmp.glob("upload-*"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
