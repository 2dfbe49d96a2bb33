"""TenantService on an in-memory EmbeddedStore: a replica's own writes show in its key
cache by the time the call returns."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kserve.errors import NotFound, Unauthenticated
from store import keys
from store.cache import PrefixCache
from store.embedded import EmbeddedStore
from tenants.keys import UNKNOWN_KEY
from tenants.service import TenantService


@pytest.fixture
async def store() -> AsyncIterator[EmbeddedStore]:
    s = EmbeddedStore(None)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def tenants(store: EmbeddedStore) -> AsyncIterator[TenantService]:
    svc = TenantService(store)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


async def test_deleting_a_tenant_stops_its_keys_on_this_replica_at_once(tenants: TenantService) -> None:
    await tenants.create_tenant("acme")
    await tenants.create_tenant("globex")
    _, doomed = await tenants.issue_key("tenant", "acme")
    _, other = await tenants.issue_key("tenant", "globex")
    assert (await tenants.authenticate(f"Bearer {doomed}")).tenant == "acme"
    await tenants.delete_tenant("acme")
    # before: the key cache still held the deleted keys until the watch delivered
    with pytest.raises(Unauthenticated) as err:
        await tenants.authenticate(f"Bearer {doomed}")
    assert err.value.message == UNKNOWN_KEY
    assert (await tenants.authenticate(f"Bearer {other}")).tenant == "globex"
    with pytest.raises(NotFound):
        await tenants.get_tenant("acme")


@pytest.mark.parametrize("name", ["", "a/b", "acme/../x"])
async def test_names_no_tenant_can_have_are_unknown_tenants(tenants: TenantService, name: str) -> None:
    with pytest.raises(NotFound, match="unknown tenant"):
        await tenants.get_tenant(name)


async def test_caught_up_waits_for_own_writes_and_gives_up_with_a_warning(store: EmbeddedStore,
                                                                          caplog) -> None:
    cache = PrefixCache(store, keys.TENANTS)
    await cache.start()
    try:
        rev = await store.put(keys.tenant("acme"), b"{}")
        assert await cache.caught_up(rev) and "/inferplex/tenants/acme" in cache
        kv = await store.get(keys.tenant("acme"))
        assert kv is not None and await store.delete(kv.key)
        await store.put(keys.instance("i-1"), b"{}")  # another prefix: this cache never sees it
        assert await cache.caught_up_with_deletes([kv]) and kv.key not in cache
        assert not await cache.caught_up(await store.current_revision(), within_s=0.05)
        assert "has not caught up with revision" in caplog.text
    finally:
        await cache.close()
