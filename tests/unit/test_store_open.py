"""open_store: which store a URL selects, and clear errors for bad URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kserve.errors import InvalidArgument
from store import open_store, parse_etcd_url
from store.embedded import EmbeddedStore
from store.etcd import EtcdStore


def test_etcd_urls_parse_to_endpoints() -> None:
    assert parse_etcd_url("etcd://127.0.0.1:2379") == [("127.0.0.1", 2379)]
    assert parse_etcd_url("etcd://a:1, b:2/") == [("a", 1), ("b", 2)]


@pytest.mark.parametrize("url", ["http://x:1", "etcd://x", "etcd://x:port", "etcd://:1"])
def test_bad_store_urls_say_what_to_write(url: str) -> None:
    with pytest.raises(InvalidArgument, match="host:port"):
        parse_etcd_url(url)


async def test_open_store_picks_the_implementation(tmp_path: Path) -> None:
    for url in (None, "embedded"):
        store = open_store(url, tmp_path)
        assert isinstance(store, EmbeddedStore)
        await store.put("/inferplex/x", b"1")
        await store.close()
    assert (tmp_path / "state.json").exists()
    etcd = open_store("etcd://127.0.0.1:1,127.0.0.1:2", tmp_path)
    assert isinstance(etcd, EtcdStore) and etcd.endpoint == "127.0.0.1:1"
    await etcd.close()
