"""The OpenAPI spec tells the truth, checked by schemathesis against a real ``inferplex up``
(control plane + worker), once with a tenant key and once with an admin key.

Every operation in the spec is run (the v2 inference routes included: they are in it), a few
generated cases each plus schemathesis's coverage cases (boundary and negative values,
methods the spec does not list), deterministic and unshrunk, and each answer is checked:
its status is one the operation declares, its body matches the declared schema and
content type, declared headers conform, nothing answers 5xx, and a method a path does not
serve gets 405 with an ``Allow`` that lists exactly the methods the spec gives it.

The tenant run pins the path parameters to real, ready models, so the routes answer from
models that exist (200s, and the infer refusals of real requests), not only 404s. A failure prints schemathesis's report: the operation, the answer and a curl line."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.cp_harness import ControlPlane, running_up
from tests.support.models import mlp_onnx

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "unsupported_method",
          "allow_header_conformance")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
BUDGET_S = 25.0  # one run takes ~10 s on a quiet 2-core machine


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, str]]:
    tmp = tmp_path_factory.mktemp("openapi")
    with running_up(tmp / "data", tmp / "up.log", workers=1) as cp:
        key = cp.create_tenant("acme")
        for name in ("mlp", "spare"):
            r = cp.upload(key, name, mlp_onnx().data)
            assert r.status_code == 201, r.text
        for name in ("mlp", "spare"):
            cp.wait_model_status(key, name, "ready")
        yield cp, key


def _schemathesis(cp: ControlPlane, key: str, workdir: Path, parameters: dict[str, str]) -> str:
    """One bounded run over every operation; returns its report, asserting it found nothing."""
    config = workdir / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in parameters.items()))
    cmd = [str(SCHEMATHESIS), "--config-file", str(config), "--no-color", "run", f"{cp.url}/openapi.json",
           "--header", f"Authorization: Bearer {key}", "--checks", ",".join(CHECKS),
           "--phases", "examples,coverage,fuzzing", "--max-examples", "3", "--generation-deterministic",
           "--no-shrink", "--workers", "1", "--request-timeout", "10"]
    started = time.monotonic()
    # its caches (.hypothesis, .schemathesis) go under workdir, never into the checkout
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=BUDGET_S + 30)
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found the spec and the server disagreeing:\n{report[-12000:]}"
    operations = sum(len(ops) for ops in httpx.get(f"{cp.url}/openapi.json").json()["paths"].values())
    assert re.search(rf"^\s*Tested: {operations}$", report, re.MULTILINE), report[-3000:]
    assert time.monotonic() - started < BUDGET_S, "the bounded run took too long: lower --max-examples"
    return report


def test_the_spec_holds_for_a_tenant_key(up: tuple[ControlPlane, str], tmp_path: Path) -> None:
    cp, key = up
    # the v2 routes' {model} is mlp, the REST routes' {name} (DELETE among them) spare: the
    # deletes must not take mlp away before the infer cases run
    _schemathesis(cp, key, tmp_path, {"path.model": "mlp", "path.name": "spare", "path.version": "1"})


def test_the_spec_holds_for_an_admin_key(up: tuple[ControlPlane, str], tmp_path: Path) -> None:
    cp, _ = up
    _schemathesis(cp, cp.admin_key, tmp_path, {})
