"""The tenant/key/model CLI as real processes against a real control-plane process."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import models
from tests.support.procs import REPO, Proc, free_port, inferplex_cmd

ADMIN = "ipx_cli-test-admin"


@pytest.fixture(scope="module")
def cp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("cli")
    port = free_port()
    proc = Proc(inferplex_cmd("controlplane", "--data-dir", str(tmp / "data"), "--http-port", str(port),
                              "--grpc-port", str(free_port())),
                tmp / "cp.log", env={"INFERPLEX_BOOTSTRAP_ADMIN_KEY": ADMIN,
                                     "INFERPLEX_MAX_UPLOAD_BYTES": str(4 * 2**20)})
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(lambda: httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200,
                        60, "inferplex controlplane")
        yield url
    finally:
        proc.stop()


def cli(url: str, key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPLEX_")}
    env["INFERPLEX_URL"] = url
    if key is not None:
        env["INFERPLEX_KEY"] = key
    return subprocess.run(inferplex_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_operator_and_tenant_workflow(cp_url: str, tmp_path: Path) -> None:
    r = cli(cp_url, ADMIN, "tenant", "create", "acme", "--display-name", "Acme")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "acme"
    r = cli(cp_url, ADMIN, "tenant", "create", "acme")
    assert r.returncode == 1 and r.stderr.strip() == "error: tenant 'acme' already exists"
    assert "acme\tAcme" in cli(cp_url, ADMIN, "tenant", "list").stdout
    r = cli(cp_url, ADMIN, "tenant", "update", "acme", "--weight", "2", "--rate", "50",
            "--service-class", "batch")
    assert r.returncode == 0, r.stderr
    updated = json.loads(r.stdout)
    assert (updated["weight"], updated["rate_per_s"], updated["service_class"]) == (2.0, 50.0, "batch")
    r = cli(cp_url, ADMIN, "tenant", "update", "acme")
    assert r.returncode != 0 and "nothing to change" in r.stderr
    assert cli(cp_url, ADMIN, "tenant", "update", "acme", "--service-class", "interactive").returncode == 0

    r = cli(cp_url, ADMIN, "key", "issue", "--tenant", "acme")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()  # the key alone, for KEY=$(inferplex key issue ...)
    assert r.stdout == key + "\n" and key.startswith("ipx_")
    assert r.stderr.startswith("tenant acme key key_") and "not shown again" in r.stderr
    key_id = r.stderr.split()[3].rstrip(":")
    r = cli(cp_url, ADMIN, "key", "issue", "--tenant", "acme", "--json", "--expires-in-s", "3600")
    issued = json.loads(r.stdout)
    assert issued["tenant"] == "acme" and issued["key"].startswith("ipx_") and issued["expires_at"] > 0
    assert ", expires " in r.stderr
    assert cli(cp_url, ADMIN, "key", "revoke", issued["key_id"]).returncode == 0
    assert f"{key_id}\ttenant\tactive" in cli(cp_url, ADMIN, "key", "list", "--tenant", "acme").stdout

    model = tmp_path / "mlp.onnx"
    model.write_bytes(models.mlp_onnx().data)
    r = cli(cp_url, key, "model", "upload", str(model), "--name", "mlp", "--slo-ms", "25")
    assert r.returncode == 0, r.stderr
    assert "100%" in r.stderr and "uploaded mlp version 1 (onnxruntime_onnx" in r.stdout
    r = cli(cp_url, key, "model", "list")
    assert r.stdout.startswith("mlp\t1\tonnxruntime_onnx\t"), r.stdout
    described = json.loads(cli(cp_url, key, "model", "describe", "mlp").stdout)
    assert described["versions"][0]["slo_ms"] == 25

    torch_file = tmp_path / "model.pt"
    torch_file.write_bytes(models.mlp_torchscript().data)
    specs = ["--inputs", '[{"name":"INPUT__0","datatype":"FP32","dims":[64]}]',
             "--outputs", '[{"name":"OUTPUT__0","datatype":"FP32","dims":[10]}]']
    r = cli(cp_url, key, "model", "upload", str(torch_file), "--name", "mlp_pt", "--max-batch-size", "8",
            "--quiet", *specs)
    assert r.returncode == 0 and r.stderr == "", r.stderr

    r = cli(cp_url, key, "model", "delete", "mlp")
    assert r.returncode == 0 and "deleted mlp versions [1]" in r.stdout
    r = cli(cp_url, key, "model", "describe", "mlp")
    assert r.returncode == 1 and r.stderr.strip() == "error: Request for unknown model: 'mlp' is not found"

    assert cli(cp_url, ADMIN, "key", "revoke", key_id).returncode == 0
    r = cli(cp_url, key, "model", "list")
    assert r.returncode == 1 and r.stderr.strip() == "error: unknown or revoked API key"


def test_refused_uploads_print_the_servers_reason(cp_url: str, tmp_path: Path) -> None:
    assert cli(cp_url, ADMIN, "tenant", "create", "globex").returncode == 0
    key = cli(cp_url, ADMIN, "key", "issue", "--tenant", "globex").stdout.strip()
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(models.pickle_pt())
    r = cli(cp_url, key, "model", "upload", str(pickled), "--name", "p", "--quiet")
    assert r.returncode == 1
    assert r.stderr.startswith("error: not a TorchScript archive: export with torch.jit.script")
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\x08" * (4 * 2**20 + 1))
    r = cli(cp_url, key, "model", "upload", str(big), "--name", "big", "--quiet")
    assert r.returncode == 1 and "upload limit of 4194304 bytes" in r.stderr, r.stderr


def test_missing_key_and_unreachable_server(cp_url: str) -> None:
    r = cli(cp_url, None, "model", "list")
    assert r.returncode == 1 and "no API key: pass --key or set INFERPLEX_KEY" in r.stderr
    r = cli(f"http://127.0.0.1:{free_port()}", ADMIN, "tenant", "list")
    assert r.returncode == 2 and "cannot talk to the control plane" in r.stderr
