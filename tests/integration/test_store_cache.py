"""PrefixCache: watched in-memory copies of a prefix, across store handles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from store import StateStore
from store.cache import PrefixCache
from store.embedded import EmbeddedStore

pytestmark = pytest.mark.timeout(60)


async def test_write_through_one_handle_appears_in_another_handles_cache(
    stores: tuple[StateStore, StateStore], ns: str
) -> None:
    writer, reader = stores
    await writer.put(ns + "tenants/old", b'{"name":"old"}')
    changes: list[tuple[str, Any]] = []
    cache = PrefixCache(reader, ns + "tenants/", on_change=lambda k, v, r: changes.append((k, v)))
    await cache.start()
    try:
        assert cache.items() == [(ns + "tenants/old", {"name": "old"})]
        await writer.create_json(ns + "tenants/acme", {"name": "acme"})
        await writer.put(ns + "other/x", b"{}")  # outside the prefix
        await cache.wait_for(lambda c: c.get(ns + "tenants/acme") == {"name": "acme"}, 5)
        got = cache.get_with_revision(ns + "tenants/acme")
        assert got is not None
        # The cached revision is the one to CAS on.
        assert await writer.compare_and_set(ns + "tenants/acme", b'{"name":"acme2"}', got[1])
        await cache.wait_for(lambda c: c.get(ns + "tenants/acme") == {"name": "acme2"}, 5)
        assert await writer.delete(ns + "tenants/old")
        await cache.wait_for(lambda c: ns + "tenants/old" not in c, 5)
        assert cache.keys() == [ns + "tenants/acme"]
        assert changes == [
            (ns + "tenants/old", {"name": "old"}),  # the initial list is reported too
            (ns + "tenants/acme", {"name": "acme"}),
            (ns + "tenants/acme", {"name": "acme2"}),
            (ns + "tenants/old", None),
        ]
    finally:
        await cache.close()


async def test_cache_skips_values_that_are_not_json_and_keeps_serving(
    stores: tuple[StateStore, StateStore], ns: str
) -> None:
    writer, reader = stores
    cache = PrefixCache(reader, ns)
    await cache.start()
    try:
        await writer.put(ns + "bad", b"not json")
        await writer.put(ns + "good", b"[1]")
        await cache.wait_for(lambda c: c.get(ns + "good") == [1], 5)
        assert ns + "bad" not in cache
    finally:
        await cache.close()


async def test_cache_relists_when_its_watch_falls_behind(tmp_path: Path) -> None:
    # A tiny per-watcher buffer: writes made without yielding overflow it.
    store = EmbeddedStore(None, watch_queue_limit=3)
    changes: list[tuple[str, Any]] = []
    cache = PrefixCache(store, "/p/", on_change=lambda k, v, r: changes.append((k, v)))
    await store.put("/p/gone", b"0")
    await cache.start()
    try:
        assert await store.delete("/p/gone")
        for i in range(10):
            await store.put(f"/p/{i}", str(i).encode())
        await cache.wait_for(lambda c: len(c) == 10, 5)
        assert cache.relists >= 2  # the initial list plus at least one after overflow
        assert dict(cache.items()) == {f"/p/{i}": i for i in range(10)}
        assert changes[0] == ("/p/gone", 0)  # from the initial list
        assert ("/p/gone", None) in changes
        assert {k for k, v in changes[1:] if v is not None} == {f"/p/{i}" for i in range(10)}
    finally:
        await cache.close()
        await store.close()
