"""The Grafana dashboard in deploy/ queries only what /metrics exports: every family it names
is one the control plane renders, with labels that family has."""

from __future__ import annotations

import inspect
import json
import re

from controlplane.metrics import Metrics
from controlplane.scheduling import ScheduledForwarding
from tests.support.procs import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "inferplex-dashboard.json"
SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus to every series


def _exported() -> dict[str, set[str]]:
    """Family name -> its labels, from what the control plane renders."""
    m = Metrics()
    m.request("acme", "m", "http", "200", 0.01)
    m.error("acme", "m", "Unavailable")
    m.load("acme__m", 0.2, ok=True)
    m.loaded_bytes("acme", "m", 10)
    m.cold_start("acme", "m")
    m.eviction("acme__m", "room")
    families: dict[str, set[str]] = {}
    for line in m.render().splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, rest = line.partition("{")
        labels = set(re.findall(r'(\w+)="', rest))
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count")) else name
        families.setdefault(base, set()).update(labels)
        families.setdefault(name, set()).update(labels)
    assert "inferplex_scheduler_decisions_total" in inspect.getsource(ScheduledForwarding.render_decisions)
    families["inferplex_scheduler_decisions_total"] = {"tenant", "model", "reason"}
    return families


def test_every_query_names_an_exported_family_and_its_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) >= 10
    for expr in exprs:
        for name, selector in re.findall(r"(inferplex_\w+)(?:\{([^}]*)\})?", expr):
            assert name in exported, f"{name} is not exported by /metrics ({expr})"
            used = set(re.findall(r"(\w+)\s*=~?", selector))
            assert used <= exported[name] | SCRAPE_LABELS, (name, used, expr)
        for grouped in re.findall(r"by \(([^)]*)\)", expr):
            labels = {g.strip() for g in grouped.split(",")}
            names = re.findall(r"inferplex_\w+", expr)
            assert labels <= exported[names[0]] | SCRAPE_LABELS, (labels, expr)


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine
