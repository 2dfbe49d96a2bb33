"""The console's settings: pydantic-settings, prefix ``INFERPLEX_CONSOLE_``, built in the lifespan."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# where `make install` puts the pinned libraries (`npm ci` in console/, console/package-lock.json)
DEFAULT_LIBS = Path(__file__).resolve().parents[2] / "console" / "node_modules"


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERPLEX_CONSOLE_", extra="ignore")

    sample_interval_s: float = Field(5.0, gt=0, le=3600, description="How often the history samples this "
                                     "replica's counters (one chart point each).")
    window_s: float = Field(900.0, gt=0, le=86400, description="How much history is kept (15 minutes); "
                            "older points are dropped.")
    libs_dir: Path = Field(DEFAULT_LIBS, description="The node_modules folder holding the page's pinned "
                           "JavaScript libraries (installed by `make install`).")
