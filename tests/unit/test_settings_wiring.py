"""Operator settings reach the parts they configure (built in the lifespan, not at import)."""

from __future__ import annotations

from pathlib import Path

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


def test_settings_come_from_inferplex_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFERPLEX_PREDICTOR_WINDOW", "20")
    monkeypatch.setenv("INFERPLEX_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.predictor_window == 20
    assert settings.data_dir == tmp_path
