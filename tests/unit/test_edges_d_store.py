"""The embedded store on SQLite: an old JSON state file is imported once, a write stores
only what it changes, and a write the file refuses changes nothing."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path

import pytest

from store import StoreUnavailable, open_store
from store.embedded import EmbeddedStore

SQLITE_MAGIC = b"SQLite format 3\x00"


def _old_format_file(path: Path) -> dict:
    """A state file as the JSON-document store wrote it (format 1)."""
    doc = {
        "format": 1, "revision": 41, "next_lease": 7,
        "keys": [
            {"key": "/inferplex/bin", "value": base64.b64encode(bytes(range(256))).decode(), "enc": "b64",
             "revision": 12, "lease": None, "created": 12},
            {"key": "/inferplex/instances/i1", "value": "x", "enc": "utf8", "revision": 40, "lease": 6,
             "created": 40},
            {"key": "/inferplex/tenants/acme", "value": '{"name":"acme"}', "enc": "utf8", "revision": 30,
             "lease": None, "created": 3},
            # written before create revisions were kept: the mod revision stands in
            {"key": "/inferplex/tenants/old", "value": "{}", "enc": "utf8", "revision": 5, "lease": None},
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return doc


async def test_an_old_json_state_file_is_imported_once_and_kept_as_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "data" / "state.json"
    old_text = json.dumps(_old_format_file(path))
    store = open_store(None, tmp_path / "data")
    try:
        acme = await store.get("/inferplex/tenants/acme")
        assert acme is not None and (acme.value, acme.revision, acme.created) == (b'{"name":"acme"}', 30, 3)
        old = await store.get("/inferplex/tenants/old")
        assert old is not None and old.created == 5
        binary = await store.get("/inferplex/bin")
        assert binary is not None and binary.value == bytes(range(256))
        assert await store.get("/inferplex/instances/i1") is None  # its lease died with the old process
        assert await store.current_revision() > 41
        assert await store.grant_lease(5) >= 7  # lease ids are never reused
        newest = await store.put("/inferplex/tenants/new", b"{}")
    finally:
        await store.close()
    assert path.read_bytes().startswith(SQLITE_MAGIC)
    backup = path.with_name("state.json.v1.bak")
    assert backup.read_text() == old_text
    assert not list(path.parent.glob(".state-*")), "temp files must not be left behind"

    # a second start reads the database: nothing imported again, the later write kept
    backup.unlink()
    again = EmbeddedStore(path)
    try:
        kv = await again.get("/inferplex/tenants/new")
        assert kv is not None and kv.revision == newest
        assert not backup.exists()
        assert await again.put("/inferplex/x", b"1") > newest
    finally:
        await again.close()


def test_an_unreadable_old_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"format": 1, "revision": "many"}')
    with pytest.raises(StoreUnavailable, match="cannot read the embedded state file"):
        EmbeddedStore(path)
    path.write_text('{"format": 9, "revision": 1, "keys": []}')
    with pytest.raises(StoreUnavailable, match="format 9"):
        EmbeddedStore(path)
    assert path.read_text() == '{"format": 9, "revision": 1, "keys": []}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def _wal_bytes(path: Path) -> int:
    return os.stat(f"{path}-wal").st_size


async def test_a_write_stores_only_what_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = EmbeddedStore(path)
    try:
        for i in range(500):
            await store.put(f"/inferplex/tenants/t{i:04d}", b"v" * 1000)
        with sqlite3.connect(path) as peek:
            assert peek.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            peek.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = _wal_bytes(path)
        await store.put("/inferplex/tenants/t0250", b"w" * 1000)
        # a few pages of WAL, not the ~500 kB a rewrite of every key would write
        assert _wal_bytes(path) - before < 64 << 10
    finally:
        await store.close()
    reopened = EmbeddedStore(path)
    try:
        kv = await reopened.get("/inferplex/tenants/t0250")
        assert kv is not None and kv.value == b"w" * 1000
        assert len(await reopened.list_prefix("/inferplex/tenants/")) == 500
    finally:
        await reopened.close()


async def test_a_write_the_file_refuses_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = EmbeddedStore(path)
    try:
        rev = await store.put("/inferplex/k", b"1")
        events = store.watch_prefix("/inferplex/", start_revision=rev + 1)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreUnavailable, match="the write was not applied"):
                await store.put("/inferplex/k", b"2")
            with pytest.raises(StoreUnavailable):
                await store.delete("/inferplex/k")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        kv = await store.get("/inferplex/k")
        assert kv is not None and (kv.value, kv.revision) == (b"1", rev)
        assert await store.current_revision() == rev
        assert await store.put("/inferplex/k", b"3") == rev + 1
        first = await anext(aiter(events))
        assert (first.value, first.revision) == (b"3", rev + 1)  # no event for the refused writes
    finally:
        await store.close()
