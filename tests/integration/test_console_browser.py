"""The admin console (issue 13) in a real headless browser (Playwright driving Debian's
chromium, no browser download) against a real ``inferplex up`` with traffic running.

Signs in with the admin key; the overview's charts draw points from the history; an
instance's memory bar is what ``/admin/instances`` says; a tenant made and a key issued on
the page infer with tritonclient, and a quota set on the page is enforced (429); an
eviction shows in the decisions list; a display name with ``<script>`` is shown as text
and never runs. Each view is screenshotted; with INFERPLEX_SAVE_SCREENSHOTS=1 the pictures
go to docs/console-<view>.png (the README shows them)."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from controlplane.console.settings import DEFAULT_LIBS
from tests.integration.cp_harness import ControlPlane, http_infer, key_works, running_up
from tests.support.models import mlp_onnx, mlp_reference
from tests.support.procs import REPO, wait_until

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: make install")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no chromium: run scripts/ensure-chromium (Debian's chromium package)", allow_module_level=True)
if not (DEFAULT_LIBS / "uplot").is_dir():
    pytest.skip("the console's JavaScript libraries are not installed: run make install", allow_module_level=True)

# one worker whose budget holds three MLP hosts (~10.4 MiB each; a profile takes a place): a
# fourth model evicts one
WORKER_MEMORY = "40MiB"
ENV = {"INFERPLEX_CONSOLE_SAMPLE_INTERVAL_S": "1"}
EVIL = '<script>window.__pwned = 1</script><b id="evil">Globex</b>'
X = np.ones((1, 64), np.float32)


class Traffic:
    """Requests to acme/m0 in a loop on a thread, so the charts have something to show."""

    def __init__(self, cp: ControlPlane, key: str) -> None:
        self.cp, self.key = cp, key
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                http_infer(self.cp, self.key, "m0", X)
                self.answered += 1
            except InferenceServerException:
                pass  # refusals are part of what the console shows
            self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        wait_until(lambda: self.answered > 0, 60, "the first answered request")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, str]]:
    root = tmp_path_factory.mktemp("console")
    with running_up(root / "data", root / "up.log", workers=1, worker_memory=WORKER_MEMORY, env=ENV) as cp:
        key = cp.create_tenant("acme")
        # one at a time: profiles made at once would not all fit in the one worker's budget
        for name in ("m0", "m1", "m2"):
            assert cp.upload(key, name, mlp_onnx().data).status_code == 201
            cp.wait_model_status(key, name, "ready", timeout_s=120)
        # m1 resident beside m0 (which the traffic keeps hot), and room left to profile another
        http_infer(cp, key, "m1", X)
        with Traffic(cp, key):
            yield cp, key


@pytest.fixture(scope="module")
def page(system: tuple[ControlPlane, str]) -> Iterator[Any]:
    cp, _ = system
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            pg = context.new_page()
            pg.set_default_timeout(30_000)
            pg.on("dialog", lambda dialog: dialog.accept())  # the page confirms drains, removals, revokes
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            pg.goto(f"{cp.url}/console")
            pg.fill("#admin-key", cp.admin_key)
            pg.click("#sign-in-form button")
            pg.wait_for_selector("body[data-rendered=overview]")
            yield pg
            assert not errors, f"the page logged errors: {errors}"
        finally:
            browser.close()


def _show(page: Any, view: str) -> None:
    page.evaluate("view => { location.hash = view; }", view)
    page.wait_for_selector(f"body[data-rendered={view}]")


def _screenshot(page: Any, view: str, tmp_path: Path) -> None:
    target = (REPO / "docs" if os.environ.get("INFERPLEX_SAVE_SCREENSHOTS") == "1" else tmp_path)
    target.mkdir(exist_ok=True)
    page.screenshot(path=str(target / f"console-{view}.png"), full_page=True)


def _refresh(page: Any) -> None:
    """Render the current view now (rather than at its next 5 s refresh)."""
    page.evaluate("() => { document.body.dataset.rendered = ''; refresh(); }")
    page.wait_for_function("() => document.body.dataset.rendered !== ''")


def test_the_console_endpoints_refuse_without_an_admin_key(system: tuple[ControlPlane, str]) -> None:
    cp, tenant_key = system
    for path in ("/admin/console/history", "/admin/console/tenants", "/admin/console/models",
                 "/admin/console/decisions", "/admin/console/replicas"):
        with cp.client() as c:
            assert c.get(path).status_code == 401, path
        with cp.client(tenant_key) as c:
            assert c.get(path).status_code == 403, path
        with cp.admin() as c:
            assert c.get(path).status_code == 200, path


def test_console_responses_forbid_inline_script(system: tuple[ControlPlane, str]) -> None:
    cp, _ = system
    with cp.client() as c:
        for path in ("/console", "/console/static/console.js", "/console/lib/uplot/uPlot.iife.min.js"):
            r = c.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        html = c.get("/console").text
        assert cp.admin_key not in html  # the page itself carries no key
        scripts = re.findall(r"<script\b[^>]*>", html)
        assert scripts and all(" src=" in tag for tag in scripts), scripts  # no inline script


def test_a_tenant_key_cannot_sign_in(system: tuple[ControlPlane, str], page: Any) -> None:
    cp, tenant_key = system
    other = page.context.new_page()
    try:
        other.goto(f"{cp.url}/console")
        other.fill("#admin-key", tenant_key)
        other.click("#sign-in-form button")
        other.wait_for_selector("#error:not([hidden])")
        assert "admin key" in other.inner_text("#error")
        assert other.is_hidden("#nav") and other.is_visible("#sign-in")
        assert other.evaluate("() => sessionStorage.length") == 0  # a refused key is not kept
    finally:
        other.close()


def test_sign_in_and_the_overview_charts_draw_the_traffic(page: Any, system: tuple[ControlPlane, str],
                                                          tmp_path: Path) -> None:
    cp, _ = system
    # the key is kept in session storage only: not in the URL, not in a cookie
    assert page.evaluate("() => sessionStorage.getItem('inferplex.adminKey')") == cp.admin_key
    assert cp.admin_key not in page.url and page.context.cookies() == []
    # the history samples every second here: wait for a few points with requests in them
    def drawn() -> bool:
        _refresh(page)
        values = page.evaluate("() => charts['chart-rate'] ? charts['chart-rate'].data[1] : []")
        return len(values) >= 3 and any(v and v > 0 for v in values)

    wait_until(drawn, 30, "the requests chart to show traffic", interval_s=0.5)
    assert page.locator("#chart-rate canvas").count() == 1
    assert page.locator("#chart-p99 canvas").count() == 1
    p99 = page.evaluate("() => charts['chart-p99'].data[1]")
    assert any(v and v > 0 for v in p99), p99
    replica = page.locator("#overview-replicas tr[data-replica=cp-0]")
    assert "placement leader" in replica.inner_text() and "this one" in replica.inner_text()
    _screenshot(page, "overview", tmp_path)


def test_an_instance_memory_bar_matches_admin_instances(page: Any, system: tuple[ControlPlane, str],
                                                        tmp_path: Path) -> None:
    cp, _ = system
    _show(page, "instances")

    def matches() -> bool:
        _refresh(page)
        api = {i["instance_id"]: i for i in cp.instances()}
        shown = page.evaluate("""() => [...document.querySelectorAll('.instance')].map(p => {
            const bar = p.querySelector('.bar');
            return {id: p.dataset.instance, budget: +bar.dataset.budget, used: +bar.dataset.used,
                    width: bar.clientWidth,
                    segments: [...bar.querySelectorAll('.segment:not(.loading)')].map(s => ({
                        model: s.dataset.model, bytes: +s.dataset.bytes, width: s.getBoundingClientRect().width}))};
        })""")
        if {s["id"] for s in shown} != set(api):
            return False
        for s in shown:
            inst = api[s["id"]]
            want = sorted((m["name"].replace("__", "/", 1), m["bytes"]) for m in inst["models"])
            got = sorted((seg["model"], seg["bytes"]) for seg in s["segments"])
            if (s["budget"], s["used"], got) != (inst["memory_bytes"], inst["used_bytes"], want) or len(got) < 2:
                return False
            for seg in s["segments"]:  # each segment's width is its share of the budget
                assert abs(seg["width"] - s["width"] * seg["bytes"] / s["budget"]) < 3, (seg, s)
        return True

    wait_until(matches, 30, "the memory bars to match /admin/instances", interval_s=0.5)


def test_a_tenant_made_on_the_page_infers_with_its_key_and_its_quota_holds(
        page: Any, system: tuple[ControlPlane, str], tmp_path: Path) -> None:
    cp, _ = system
    _show(page, "tenants")
    page.fill("#create-tenant input[name=name]", "globex")
    page.fill("#create-tenant input[name=display_name]", EVIL)
    page.click("#create-tenant button[type=submit]")
    row = page.locator("tr[data-tenant=globex]")
    row.wait_for()
    # tenant text is text: shown as typed, no element made from it, no script run
    assert row.locator(".display-name").inner_text() == EVIL
    assert page.locator("#evil").count() == 0
    assert page.evaluate("() => window.__pwned") is None

    row.locator("button[data-action=issue-key]").click()
    page.wait_for_selector("#new-key:not([hidden])")
    secret = page.inner_text("#new-key-secret")
    assert secret.startswith("ipx_")
    page.click("#new-key-done")
    assert page.inner_text("#new-key-secret") == ""  # shown once
    assert cp.upload(secret, "mlp", mlp_onnx().data).status_code == 201
    cp.wait_model_status(secret, "mlp", "ready", timeout_s=120)
    np.testing.assert_allclose(http_infer(cp, secret, "mlp", X), mlp_reference(X), rtol=1e-4, atol=1e-5)
    # the picture of the instances view: two tenants' models side by side
    _show(page, "instances")
    page.wait_for_selector(".segment[data-tenant=globex]")
    _screenshot(page, "instances", tmp_path)
    _show(page, "tenants")

    # a quota set on the page: one request a minute, burst 1
    page.locator("tr[data-tenant=globex] button[data-action=edit]").click()
    page.fill("#edit-tenant input[name=rate_per_s]", "0.0166")
    page.fill("#edit-tenant input[name=burst]", "1")
    page.click("#edit-tenant button[type=submit]")
    page.wait_for_selector("#edit-tenant", state="hidden")
    with cp.admin() as c:
        wait_until(lambda: c.get("/admin/tenants/globex").json()["rate_per_s"] == 0.0166, 10, "the quota")
    statuses = []
    for _ in range(3):
        try:
            http_infer(cp, secret, "mlp", X)
            statuses.append(200)
        except InferenceServerException as exc:
            statuses.append(int(exc.status()))
    assert 429 in statuses and statuses.count(200) <= 1, statuses
    _refresh(page)
    page.wait_for_selector("tr[data-tenant=globex] td:has-text('0.02 / 1')")
    _screenshot(page, "tenants", tmp_path)

    # revoked on the page: the key stops working at once
    with cp.admin() as c:
        (key_id,) = [k["key_id"] for k in c.get("/admin/tenants/globex/keys").json()["keys"]]
    page.locator(f"tr[data-tenant=globex] button[data-revoke={key_id}]").click()
    page.wait_for_selector(f"button[data-revoke={key_id}]", state="detached")
    assert not key_works(cp, secret)


def test_the_models_view_shows_status_profile_and_copies(page: Any, system: tuple[ControlPlane, str],
                                                          tmp_path: Path) -> None:
    _show(page, "models")
    row = page.locator("tr[data-model='acme/m0']")
    row.wait_for()
    text = row.inner_text()
    # ready, its SLO, its profile (execute p50 at batch 1 on cpu, a load time) and its copy
    assert "ready" in text and "10000 ms" in text and "cpu: b1 " in text and "worker-0" in text, text
    _screenshot(page, "models", tmp_path)
    page.select_option("#models-tenant", "globex")
    page.wait_for_function("() => [...document.querySelectorAll('#models tbody tr')]"
                           ".every(r => r.dataset.model.startsWith('globex/'))")
    assert page.locator("#models tbody tr").count() == 1


def test_an_eviction_appears_in_the_decisions_list(page: Any, system: tuple[ControlPlane, str],
                                                   tmp_path: Path) -> None:
    cp, key = system
    # beside m0, m1 and globex's model there is no room for m2: one is evicted
    for name in ("m2", "m1", "m2"):
        try:
            http_infer(cp, key, name, X)
        except InferenceServerException:
            pass  # a refusal is fine: the eviction is what is looked for
    _show(page, "decisions")
    page.fill("#decisions-filter input[name=tenant]", "acme")
    page.click("#decisions-filter button[type=submit]")

    def evicted() -> bool:
        _refresh(page)
        return page.locator("#decisions tr[data-kind=evict]").count() > 0

    wait_until(evicted, 30, "an eviction in the decisions list", interval_s=0.5)
    assert "evicted acme/" in page.locator("#decisions tr[data-kind=evict]").first.inner_text()
    page.fill("#decisions-filter input[name=tenant]", "")
    _refresh(page)
    _screenshot(page, "decisions", tmp_path)
    # filtered by a model: only the events that name it
    page.fill("#decisions-filter input[name=model]", "m2")
    _refresh(page)
    rows = page.locator("#decisions tbody tr").all_inner_texts()
    assert rows and all("m2" in row for row in rows), rows


def test_drain_from_the_page_marks_the_instance_draining(page: Any, system: tuple[ControlPlane, str]) -> None:
    cp, _ = system
    with cp.admin() as c:
        paths = c.get("/openapi.json").json()["paths"]
    if "/admin/instances/{instance_id}/drain" not in paths:
        pytest.skip("this build has no POST /admin/instances/{instance_id}/drain yet")
    _show(page, "instances")
    page.locator(".instance[data-instance=worker-0] button[data-action=drain]").click()
    wait_until(lambda: cp.instances()[0].get("draining") is True, 15, "worker-0 to be draining")
    _refresh(page)
    page.wait_for_selector(".instance[data-instance=worker-0] .badge:has-text('draining')")
