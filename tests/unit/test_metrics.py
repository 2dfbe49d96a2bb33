from __future__ import annotations

import re

from controlplane.metrics import Metrics


def _sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"series {series!r} not in:\n{text}")


def test_request_counter_counts_per_tenant_model_protocol_status() -> None:
    m = Metrics()
    m.request("acme", "mlp", "http", "200", 0.002)
    m.request("acme", "mlp", "http", "200", 0.003)
    m.request("acme", "mlp", "grpc", "200", 0.003)
    m.request("globex", "mlp", "http", "404", 0.001)
    text = m.render()
    assert _sample(text, 'inferplex_requests_total{tenant="acme",model="mlp",protocol="http",status="200"}') == 2
    assert _sample(text, 'inferplex_requests_total{tenant="globex",model="mlp",protocol="http",status="404"}') == 1
    assert m.counter_value("inferplex_requests_total", tenant="acme") == 3


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    m = Metrics()
    for s in (0.001, 0.001, 0.02, 100.0):
        m.request("t", "m", "grpc", "200", s)
    text = m.render()
    base = 'inferplex_request_duration_seconds_bucket{tenant="t",model="m",protocol="grpc",le="%s"}'
    assert _sample(text, base % "0.0005") == 0
    assert _sample(text, base % "0.001") == 2  # equal to the bound counts in it
    assert _sample(text, base % "0.025") == 3
    assert _sample(text, base % "30") == 3
    assert _sample(text, base % "+Inf") == 4
    assert _sample(text, 'inferplex_request_duration_seconds_count{tenant="t",model="m",protocol="grpc"}') == 4
    assert abs(_sample(text, 'inferplex_request_duration_seconds_sum{tenant="t",model="m",protocol="grpc"}')
               - 100.022) < 1e-9


def test_loads_errors_evictions_and_label_escaping() -> None:
    m = Metrics()
    m.load("acme__mlp", 0.3, True)
    m.load("acme__mlp", 0.1, False)
    m.error('we"ird', "m\\x", "not_found")
    m.eviction("acme__mlp")
    m.eviction("acme__mlp", "room")
    m.loaded_bytes("acme", "mlp", 1000)
    m.loaded_bytes("acme", "mlp", 24)
    m.cold_start("acme", "mlp")
    text = m.render()
    assert _sample(text, 'inferplex_model_loads_total{tenant="acme",model="mlp",outcome="ok"}') == 1
    assert _sample(text, 'inferplex_model_loads_total{tenant="acme",model="mlp",outcome="failed"}') == 1
    # failed loads are not timed: only the successful one is in the histogram
    assert _sample(text, 'inferplex_model_load_duration_seconds_count{tenant="acme",model="mlp"}') == 1
    assert _sample(text, 'inferplex_model_bytes_loaded_total{tenant="acme",model="mlp"}') == 1024
    assert _sample(text, 'inferplex_cold_starts_total{tenant="acme",model="mlp"}') == 1
    assert _sample(text, 'inferplex_evictions_total{tenant="acme",model="mlp",reason="room"}') == 1
    assert _sample(text, 'inferplex_errors_total{tenant="we\\"ird",model="m\\\\x",kind="not_found"}') == 1
    assert _sample(text, 'inferplex_evictions_total{tenant="acme",model="mlp",reason="delete"}') == 1


def test_every_family_has_help_and_type_even_when_empty() -> None:
    text = Metrics().render()
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert ("inferplex_requests_total", "counter") in types
    assert ("inferplex_request_duration_seconds", "histogram") in types
    assert len(re.findall(r"^# HELP ", text, re.M)) == len(types) == 8
