"""Operator settings reach the parts they configure (built in the lifespan, not at import)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

from controlplane import serve, up
from controlplane.services import build_services, close_services
from controlplane.settings import Settings


async def test_predictor_and_feed_take_their_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, predictor_window=12, predictor_percentile=95.0,
                        stats_poll_interval_s=0.25)
    services = await build_services(settings)
    try:
        assert services.predictor.config.window == 12
        assert services.predictor.config.percentile == 95.0
        assert services.placement.feed.min_interval_s == 0.25
    finally:
        await close_services(services)


async def test_the_evict_margin_reaches_the_planner_and_null_means_free_memory_only(monkeypatch, tmp_path: Path) -> None:
    import pydantic
    import pytest
    for text, want in (("16", 16.0), ("null", None), ("none", None)):
        monkeypatch.setenv("INFERPLEX_PLACEMENT_EVICT_MARGIN", text)
        assert Settings().placement_evict_margin == want
    monkeypatch.setenv("INFERPLEX_PLACEMENT_EVICT_MARGIN", "0.5")
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        Settings()
    services = await build_services(Settings(data_dir=tmp_path, placement_evict_margin=None))
    try:
        assert services.placement.planner.config.evict_margin is None
    finally:
        await close_services(services)


def test_settings_come_from_inferplex_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFERPLEX_PREDICTOR_WINDOW", "20")
    monkeypatch.setenv("INFERPLEX_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.predictor_window == 20
    assert settings.data_dir == tmp_path


def _parse(module: ModuleType, *argv: str) -> argparse.Namespace:
    """argv (the subcommand first) through the subcommand parser that ``module`` registers."""
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    return parser.parse_args(argv)


def _controlplane_args(*argv: str) -> argparse.Namespace:
    return _parse(serve, "controlplane", *argv)


def _up_args(*argv: str) -> argparse.Namespace:
    return _parse(up, "up", *argv)


def test_inferplex_controlplane_takes_what_its_options_leave_out_from_the_environment(
        monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFERPLEX_HOST", "0.0.0.0")
    monkeypatch.setenv("INFERPLEX_HTTP_PORT", "9100")
    monkeypatch.setenv("INFERPLEX_GRPC_PORT", "9101")
    monkeypatch.setenv("INFERPLEX_STORE_URL", "etcd://etcd:2379")
    monkeypatch.setenv("INFERPLEX_DATA_DIR", "state")
    settings = serve.settings_from_args(_controlplane_args())
    assert (settings.host, settings.http_port, settings.grpc_port) == ("0.0.0.0", 9100, 9101)
    assert settings.store_url == "etcd://etcd:2379"
    assert settings.data_dir == tmp_path / "state" and settings.artifact_dir is None
    # an option given beats the environment; relative paths are resolved
    settings = serve.settings_from_args(_controlplane_args(
        "--http-port", "9200", "--host", "127.0.0.2", "--data-dir", "d", "--artifact-dir", "a"))
    assert (settings.host, settings.http_port, settings.grpc_port) == ("127.0.0.2", 9200, 9101)
    assert (settings.data_dir, settings.artifact_dir) == (tmp_path / "d", tmp_path / "a")


def test_inferplex_controlplane_defaults_without_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("HOST", "HTTP_PORT", "GRPC_PORT", "STORE_URL", "DATA_DIR", "ARTIFACT_DIR", "REPLICA_ID"):
        monkeypatch.delenv(f"INFERPLEX_{name}", raising=False)
    settings = serve.settings_from_args(_controlplane_args())
    assert (settings.host, settings.http_port, settings.grpc_port) == ("127.0.0.1", 8000, 8001)
    assert (settings.store_url, settings.replica_id) == (None, "cp-0")
    assert settings.data_dir == tmp_path / "data"


def test_inferplex_up_takes_what_its_options_leave_out_from_the_environment(
        monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFERPLEX_HOST", "127.0.0.3")
    monkeypatch.setenv("INFERPLEX_HTTP_PORT", "9300")
    monkeypatch.setenv("INFERPLEX_DATA_DIR", "state")
    monkeypatch.delenv("INFERPLEX_GRPC_PORT", raising=False)
    settings = up.settings_from_args(_up_args())
    assert (settings.host, settings.http_port, settings.grpc_port) == ("127.0.0.3", 9300, 8001)
    assert settings.data_dir == tmp_path / "state"
    settings = up.settings_from_args(_up_args("--http-port", "9400", "--data-dir", "d"))
    assert (settings.http_port, settings.data_dir) == (9400, tmp_path / "d")
