"""The worker's own folder on disk: the temporary copies of the models it loads and its
artifact cache live in one folder per worker process, under a root shared by the
workers of a machine (``--scratch-dir``).

The folder is flock'ed for as long as the worker lives (the kernel drops the lock when
the process dies, SIGKILL included). A starting worker removes every folder under the
root whose lock it can take: those of workers that died without cleaning up. A live
worker's folder is never removed: its lock is held.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "worker-"
_CLAIM_TRIES = 5


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / f"inferplex-worker-{os.getuid()}"


class ScratchDir:
    """A claimed, locked per-worker folder: ``models/`` for temporary model copies,
    ``cache/`` for the artifact cache."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._fd = lock_fd
        self.models = path / "models"
        self.cache = path / "cache"
        self.models.mkdir(exist_ok=True)
        self.cache.mkdir(exist_ok=True)

    @classmethod
    def claim(cls, root: Path) -> ScratchDir:
        """Create and lock this worker's folder under ``root``, removing dead workers'
        folders there first. Raises ``OSError`` with advice when ``root`` is not usable."""
        _own_root(root)
        removed = remove_dead(root)
        if removed:
            log.info("removed %d folder(s) left by workers that died: %s", len(removed),
                     ", ".join(p.name for p in removed))
        for _ in range(_CLAIM_TRIES):
            path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
            fd = _lock(path)
            # another worker starting at this instant may have taken our fresh folder for a
            # dead one between mkdtemp and the lock: use it only if it is still ours
            if fd is not None and _same_inode(fd, path):
                return cls(path, fd)
            if fd is not None:
                os.close(fd)
        raise OSError(f"could not claim a folder under {root}: other workers kept removing it")

    def release(self) -> None:
        """Remove the folder (the worker is stopping) and drop the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)

    def temp_model_dir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.models))


def remove_dead(root: Path) -> list[Path]:
    """Remove the folders under ``root`` whose lock is free; return them."""
    removed = []
    for path in sorted(root.glob(f"{PREFIX}*")):
        if path.is_symlink() or not path.is_dir():
            continue
        fd = _lock(path)
        if fd is None:
            continue  # a live worker's
        try:
            if _same_inode(fd, path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def _lock(path: Path) -> int | None:
    """An fd on ``path`` holding its exclusive lock, None if another process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # removed meanwhile, or not a folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _same_inode(fd: int, path: Path) -> bool:
    try:
        held, now = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _own_root(root: Path) -> None:
    """The root must be a real folder of this user that no one else can write: the worker
    writes tenants' model files there."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.stat(root, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"--scratch-dir {root} is not a folder (a link?); give a folder of your own")
    if st.st_uid != os.getuid():
        raise OSError(f"--scratch-dir {root} belongs to another user; give a folder of your own")
    if st.st_mode & 0o022:
        raise OSError(f"--scratch-dir {root} is writable by other users; chmod go-w it or give another")
