"""State store: the interface (base), its implementations, and how to open one."""

from __future__ import annotations

from pathlib import Path

from kserve.errors import InvalidArgument
from store.base import (
    PREFIX,
    KeyValue,
    LeaseExpired,
    OwnerGone,
    StateStore,
    StoreUnavailable,
    WatchCompacted,
    WatchEvent,
)

__all__ = [
    "PREFIX",
    "KeyValue",
    "LeaseExpired",
    "OwnerGone",
    "StateStore",
    "StoreUnavailable",
    "WatchCompacted",
    "WatchEvent",
    "open_store",
    "parse_etcd_url",
]


def parse_etcd_url(url: str) -> list[tuple[str, int]]:
    """``etcd://host:port[,host:port...]`` -> endpoints."""
    if not url.startswith("etcd://"):
        raise InvalidArgument(f"store URL {url!r} must look like etcd://host:port[,host:port]")
    endpoints: list[tuple[str, int]] = []
    for part in url.removeprefix("etcd://").rstrip("/").split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(
                f"bad etcd endpoint {part!r} in {url!r}: expected host:port, e.g. 127.0.0.1:2379"
            )
        endpoints.append((host, int(port)))
    return endpoints


def open_store(url: str | None, data_dir: Path) -> StateStore:
    """``etcd://...`` -> EtcdStore; None or ``embedded`` -> EmbeddedStore at data_dir/state.json."""
    if url is None or url == "embedded":
        from store.embedded import EmbeddedStore

        return EmbeddedStore(data_dir / "state.json")
    from store.etcd import EtcdStore

    return EtcdStore(parse_etcd_url(url))
