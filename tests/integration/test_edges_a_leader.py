"""/admin/leader tells the reconcile loop's health now: a pass that failed through an etcd
outage stays visible as the last failed pass, but not as the last pass once passes succeed
again (real app, real etcd stopped and started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cp_app import running_app, settings_for
from tests.support.etcd import EtcdServer
from tests.support.procs import eventually

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(90)]


async def test_last_pass_shows_the_latest_pass_after_an_etcd_outage_not_the_failed_one(
        make_etcd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: EtcdServer = make_etcd()
    settings = settings_for(tmp_path / "data", store_url=server.url, leader_lease_ttl_s=2)
    async with running_app(settings) as cp:
        seen: dict[str, Any] = {}

        async def reconcile(pred: Any) -> bool:
            r = await cp.admin("GET", "/admin/leader")
            if r.status_code != 200:
                return False
            seen.update(r.json()["reconcile"])
            return bool(pred(seen))

        await eventually(lambda: reconcile(lambda s: s["last_pass"] and s["last_pass"]["ok"]), 20,
                         "a first successful pass")
        assert seen["last_failed_pass"] is None
        server.stop()
        reconciler = cp.services.reconciler
        await eventually(lambda: reconciler.last is not None and not reconciler.last.ok, 20,
                         "a pass to fail while etcd is down")
        failed_at = reconciler.last.started_at
        server.start()
        passes = reconciler.passes
        await eventually(lambda: reconcile(lambda s: s["passes"] > passes + 1 and s["last_pass"]["ok"]), 30,
                         "passes to succeed again")
        # before: last_pass kept showing the failed pass (only passes that changed something
        # or failed were recorded)
        assert seen["last_pass"]["started_at"] > failed_at
        assert all(step["ok"] for step in seen["last_pass"]["steps"])
        failed = seen["last_failed_pass"]
        assert failed is not None and failed["ok"] is False and failed["started_at"] == failed_at
        assert any(not step["ok"] and step["detail"] for step in failed["steps"])
