"""The worker's artifact cache (LRU within its byte budget, nothing trusted without its
digest) and its per-worker folder (locked while the worker lives, removed once it died)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelfiles.artifacts import CACHING_SERVERS, files_digest
from worker.artifact_cache import ArtifactCache, cache_snapshot, folder_digest
from worker.scratch import ScratchDir, remove_dead
from worker.service import SERVER_NAME


def _model_folder(root: Path, name: str, files: dict[str, bytes]) -> tuple[Path, str]:
    folder = root / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder, files_digest(files)


def test_a_folder_digest_is_the_digest_of_the_files_it_holds(tmp_path: Path) -> None:
    files = {"1/model.onnx": b"weights" * 1000, "2/model.onnx": b"other", "1/extra/vocab.txt": b"a b c"}
    folder, digest = _model_folder(tmp_path, "m", files)
    assert folder_digest(folder) == digest
    (folder / "2" / "model.onnx").write_bytes(b"othex")
    assert folder_digest(folder) != digest


def test_the_digest_tells_a_renamed_or_moved_byte_apart() -> None:
    assert files_digest({"1/a": b"xy"}) != files_digest({"1/ax": b"y"})
    assert files_digest({"1/a": b"x", "1/b": b""}) != files_digest({"1/a": b"", "1/b": b"x"})
    assert files_digest({"1/a": b"x", "1/b": b"y"}) == files_digest({"1/b": b"y", "1/a": b"x"})


def test_a_kept_folder_is_taken_back_verified_and_counted_as_a_hit(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", 1 << 20)
    folder, digest = _model_folder(tmp_path, "m", {"1/model.onnx": b"w" * 100})
    assert cache.admit(digest, folder) and not folder.exists()
    assert digest in cache and cache.snapshot()["used_bytes"] == 100
    assert cache.snapshot()["digests"] == [digest]  # what the planner maps to warm loads
    dest = tmp_path / "loaded"
    assert cache.take(digest, dest)
    assert (dest / "1" / "model.onnx").read_bytes() == b"w" * 100
    # in use now, so no longer in the cache: the bytes are on disk once
    assert digest not in cache
    assert cache.snapshot() == {"budget_bytes": 1 << 20, "used_bytes": 0, "entries": 0, "hits": 1,
                                "misses": 0, "corrupt": 0, "evictions": 0, "digests": []}


def test_a_corrupted_entry_is_removed_and_answered_as_a_miss(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", 1 << 20)
    folder, digest = _model_folder(tmp_path, "m", {"1/model.onnx": b"w" * 100})
    cache.admit(digest, folder)
    (tmp_path / "cache" / digest / "1" / "model.onnx").write_bytes(b"x" * 100)  # same size, other bytes
    dest = tmp_path / "loaded"
    assert not cache.take(digest, dest)
    assert not dest.exists() and not (tmp_path / "cache" / digest).exists()
    snap = cache.snapshot()
    assert (snap["hits"], snap["misses"], snap["corrupt"], snap["entries"]) == (0, 1, 1, 0)


def test_an_entry_with_a_link_in_it_is_corrupt(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", 1 << 20)
    folder, digest = _model_folder(tmp_path, "m", {"1/model.onnx": b"w"})
    cache.admit(digest, folder)
    secret = tmp_path / "secret"
    secret.write_bytes(b"w")
    entry_file = tmp_path / "cache" / digest / "1" / "model.onnx"
    entry_file.unlink()
    entry_file.symlink_to(secret)
    assert not cache.take(digest, tmp_path / "loaded")
    assert cache.snapshot()["corrupt"] == 1 and secret.exists()


def test_an_unknown_or_malformed_digest_is_a_miss_that_touches_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", 1 << 20)
    assert not cache.take("0" * 64, tmp_path / "a")
    assert not cache.take("../../etc", tmp_path / "b")
    assert cache.snapshot()["misses"] == 2 and not (tmp_path / "a").exists()


def test_least_recently_used_go_first_when_the_budget_is_full(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", 250)
    digests = []
    for i in range(3):
        folder, digest = _model_folder(tmp_path, f"m{i}", {"1/model.onnx": bytes([i]) * 100})
        digests.append(digest)
        cache.admit(digest, folder)
    # m0 went to make room for m2
    assert [d in cache for d in digests] == [False, True, True]
    # m1 is used (taken and handed back): m2 is now the oldest and goes for m3
    cache.take(digests[1], tmp_path / "in-use")
    cache.admit(digests[1], tmp_path / "in-use")
    folder, d3 = _model_folder(tmp_path, "m3", {"1/model.onnx": b"3" * 100})
    cache.admit(d3, folder)
    assert [d in cache for d in [*digests, d3]] == [False, True, False, True]
    snap = cache.snapshot()
    assert snap["used_bytes"] == 200 and snap["evictions"] == 2
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([digests[1], d3])


def test_a_folder_over_the_whole_budget_or_with_the_cache_off_is_removed(tmp_path: Path) -> None:
    small = ArtifactCache(tmp_path / "small", 50)
    folder, digest = _model_folder(tmp_path, "big", {"1/model.onnx": b"w" * 100})
    assert not small.admit(digest, folder) and not folder.exists()
    off = ArtifactCache(tmp_path / "off", 0)
    folder, digest = _model_folder(tmp_path, "m", {"1/model.onnx": b"w"})
    assert not off.admit(digest, folder) and not folder.exists()
    assert not off.enabled and cache_snapshot(None) == cache_snapshot(off)


def test_the_worker_is_a_server_the_driver_sends_digests_to() -> None:
    assert SERVER_NAME in CACHING_SERVERS


# ---------------------------------------------------------------- the per-worker folder

def test_a_live_workers_folder_is_kept_and_a_released_one_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    first = ScratchDir.claim(root)
    (first.models / "m-1").mkdir()
    second = ScratchDir.claim(root)  # removes dead ones only: the first is alive
    assert first.path.is_dir() and (first.models / "m-1").is_dir() and second.path != first.path
    first.release()
    assert not first.path.exists() and second.path.is_dir()
    second.release()
    assert list(root.iterdir()) == []


def test_a_killed_workers_folder_is_removed_by_the_next_worker(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, pathlib
        from worker.scratch import ScratchDir
        s = ScratchDir.claim(pathlib.Path({str(root)!r}))
        (s.models / "m-1").mkdir()
        (s.models / "m-1" / "model.onnx").write_bytes(b"w")
        print(s.path, flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert child.stdout is not None
        path = Path(child.stdout.readline().strip())
        assert (path / "models" / "m-1" / "model.onnx").is_file()
        assert remove_dead(root) == []  # its worker is alive: its lock is held
        child.kill()
        child.wait(10)
        mine = ScratchDir.claim(root)
        assert not path.exists() and mine.path.is_dir()
        mine.release()
    finally:
        child.kill()
        child.wait(10)


def test_a_scratch_root_others_can_write_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(OSError, match="writable by other users"):
        ScratchDir.claim(root)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(OSError, match="not a folder"):
        ScratchDir.claim(link)
