"""`inferplex up` keeps the first admin key even when the start fails after minting it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import controlplane.app
from controlplane import up
from controlplane.services import build_services, close_services
from controlplane.settings import Settings


def _up_args(data_dir: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    up.register(parser.add_subparsers())
    return parser.parse_args(["up", "--workers", "0", "--http-port", "0", "--grpc-port", "0",
                              "--data-dir", str(data_dir)])


async def test_a_start_that_fails_after_minting_the_admin_key_has_saved_it(tmp_path: Path,
                                                                             monkeypatch) -> None:
    def broken_app(*_args: object) -> None:
        raise RuntimeError("the start failed after build_services")

    monkeypatch.setattr(controlplane.app, "create_app", broken_app)
    with pytest.raises(RuntimeError, match="after build_services"):
        args = _up_args(tmp_path)
        await up._serve(args, up.settings_from_args(args), up.StopFlag())
    key = (tmp_path / "admin.key").read_text().strip()
    assert key.startswith("ipx_")
    assert (tmp_path / "admin.key").stat().st_mode & 0o777 == 0o600
    # the next start mints nothing: the saved key is the one that works
    services = await build_services(Settings(data_dir=tmp_path))
    try:
        assert services.new_admin_key is None
        assert (await services.tenants.authenticate(f"Bearer {key}")).role == "admin"
    finally:
        await close_services(services)


def test_admin_key_path_defaults_to_the_data_dir(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).admin_key_path == tmp_path / "admin.key"
    assert Settings(data_dir=tmp_path, admin_key_file=tmp_path / "k").admin_key_path == tmp_path / "k"
