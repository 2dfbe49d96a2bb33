"""The model CLI as a new tenant and operator meet it (issue 11): the real ``inferplex``
commands against ``inferplex up`` as a real process. An admin key without --tenant is told
the flag before any file is sent; describe shows nothing internal; progress ends at 100%;
--config takes a Triton config.pbtxt or its JSON form; --help says what is inferred."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.validation import MAX_BATCH_SIZE_RULE
from tests.integration.cp_harness import ControlPlane, running_up
from tests.support import models
from tests.support.procs import REPO, inferplex_cmd

PASS_TENANT = "error: an admin key acts on one tenant's models: pass --tenant NAME"
PT_PBTXT = """
# the TorchScript MLP's config, as a Triton model repository holds it
platform: "pytorch_libtorch"
max_batch_size: 4
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 10 ] } ]
"""


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("edges_e_cli")
    with running_up(root / "data", root / "up.log", workers=1) as cp:
        yield cp


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("edges_e_cli_files")
    written = {"onnx": root / "mlp.onnx", "pt": root / "mlp.pt", "pbtxt": root / "config.pbtxt",
               "json": root / "config.json", "wrong": root / "wrong.json"}
    written["onnx"].write_bytes(models.mlp_onnx().data)
    written["pt"].write_bytes(models.mlp_torchscript().data)
    written["pbtxt"].write_text(PT_PBTXT)
    config = {"name": "pt-json", "backend": "pytorch", "max_batch_size": 2,
              "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [64]}],
              "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [10]}]}
    written["json"].write_text(json.dumps(config))
    config["input"][0]["dims"] = [32]  # the model computes on 64
    written["wrong"].write_text(json.dumps({**config, "name": "pt-wrong"}))
    return written


@pytest.fixture(scope="module")
def key(cp: ControlPlane) -> str:
    return cp.create_tenant("acme")


def cli(cp: ControlPlane, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPLEX_")}
    env.update(INFERPLEX_URL=cp.url, INFERPLEX_KEY=key)
    return subprocess.run(inferplex_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)


def _versions(cp: ControlPlane, key: str, name: str) -> list[dict[str, Any]]:
    with cp.client(key) as c:
        r = c.get(f"/v1/models/{name}")
        return r.json()["versions"] if r.status_code == 200 else []


def test_an_admin_key_without_tenant_is_told_the_flag_before_any_file_is_sent(
        cp: ControlPlane, key: str, files: dict[str, Path]) -> None:
    r = cli(cp, cp.admin_key, "model", "upload", str(files["onnx"]), "--name", "m")
    assert r.returncode == 1 and r.stderr.strip() == PASS_TENANT, r.stderr
    assert "uploading" not in r.stderr and r.stdout == ""  # not a chunk of the file was read
    for command in (("model", "list"), ("model", "describe", "m"), ("model", "delete", "m")):
        r = cli(cp, cp.admin_key, *command)
        assert r.returncode == 1 and r.stderr.strip() == PASS_TENANT, (command, r.stderr)
    # a tenant key naming another tenant, and a key that is not valid: refused before the file too
    r = cli(cp, key, "model", "upload", str(files["onnx"]), "--name", "m", "--tenant", "globex")
    assert r.returncode == 1 and "uploading" not in r.stderr and "leave out ?tenant=" in r.stderr, r.stderr
    r = cli(cp, "ipx_not-a-key", "model", "upload", str(files["onnx"]), "--name", "m")
    assert r.returncode == 1 and "uploading" not in r.stderr
    assert r.stderr.strip() == "error: unknown or revoked API key", r.stderr
    assert _versions(cp, key, "m") == []
    # with --tenant the admin key acts on that tenant's models; a tenant's describe of a
    # missing model still says so, not "pass --tenant"
    r = cli(cp, cp.admin_key, "model", "list", "--tenant", "acme")
    assert r.returncode == 0, r.stderr
    r = cli(cp, key, "model", "describe", "nope")
    assert r.returncode == 1 and "unknown model" in r.stderr and "--tenant" not in r.stderr, r.stderr


def test_upload_progress_reaches_100_before_ready_and_describe_shows_nothing_internal(
        cp: ControlPlane, key: str, files: dict[str, Path]) -> None:
    r = cli(cp, key, "model", "upload", str(files["onnx"]), "--name", "mlp")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("mlp version 1 is ready"), r.stdout
    # the last progress the terminal shows (each update rewrites the line after a \r)
    shown = [line.rsplit("\r", 1)[-1] for line in r.stderr.splitlines() if line.strip()]
    assert shown[-1] == "profiling 100%", r.stderr
    assert re.fullmatch(r"uploading mlp\.onnx \[#{25}\] 100% \(\d+/\d+ bytes\)", shown[0]), shown
    for who, extra in ((key, ()), (cp.admin_key, ("--tenant", "acme"))):
        r = cli(cp, who, "model", "describe", "mlp", *extra)
        assert r.returncode == 0, r.stderr
        described = json.loads(r.stdout)
        assert described["name"] == "mlp" and described["versions"][0]["status"] == "ready"
        assert "qualified_name" not in r.stdout and "acme__" not in r.stdout, r.stdout


def test_config_pbtxt_and_json_declare_a_torchscript_models_io(
        cp: ControlPlane, key: str, files: dict[str, Path]) -> None:
    r = cli(cp, key, "model", "upload", str(files["pt"]), "--name", "pt", "--config", str(files["pbtxt"]))
    assert r.returncode == 0, r.stderr
    assert "uploaded pt version 1 (pytorch_libtorch" in r.stdout and "is ready" in r.stdout, r.stdout
    [v] = _versions(cp, key, "pt")
    assert v["max_batch_size"] == 4 and v["status"] == "ready"
    assert v["inputs"] == [{"name": "INPUT__0", "datatype": "FP32", "dims": [64]}]
    assert v["outputs"] == [{"name": "OUTPUT__0", "datatype": "FP32", "dims": [10]}]
    # the JSON form, and its name is the model's when --name is left out
    r = cli(cp, key, "model", "upload", str(files["pt"]), "--config", str(files["json"]), "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("uploaded pt-json version 1 (pytorch_libtorch"), r.stdout
    assert _versions(cp, key, "pt-json")[0]["max_batch_size"] == 2


def test_config_mistakes_are_refused_before_the_file_is_sent(
        cp: ControlPlane, key: str, files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.pbtxt"
    bad.write_text(PT_PBTXT + "instance_group [ { kind: KIND_GPU } ]")
    cases = [
        (("--name", "x", "--config", str(files["pbtxt"]), "--max-batch-size", "2"),
         "error: give the model's I/O once: either --config or --max-batch-size, not both"),
        (("--name", "x", "--config", str(bad)),
         f"error: --config {bad}: config field 'instance_group' cannot be set by an upload"),
        (("--name", "other", "--config", str(files["json"])),
         "error: --config names the model 'pt-json' but --name is 'other'"),
        (("--config", str(files["pbtxt"])),
         "error: missing model name: pass --name NAME (or a --config that names the model)"),
        (("--name", "x", "--config", str(tmp_path / "absent.pbtxt")), "error: no such file: "),
    ]
    for args, error in cases:
        r = cli(cp, key, "model", "upload", str(files["pt"]), *args)
        assert r.returncode == 1 and r.stderr.startswith(error), (args, r.stderr)
        assert "uploading" not in r.stderr, r.stderr
    assert _versions(cp, key, "x") == [] and _versions(cp, key, "other") == []


def test_a_config_whose_dims_the_model_does_not_compute_fails_the_upload(
        cp: ControlPlane, key: str, files: dict[str, Path]) -> None:
    r = cli(cp, key, "model", "upload", str(files["pt"]), "--config", str(files["wrong"]))
    assert r.returncode == 1, (r.stdout, r.stderr)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("pt-wrong version 1 is failed: the model failed when run on inputs of its "
                           "declared shapes"), last
    assert "profiling 100%" not in r.stderr  # it did not finish


def test_upload_help_says_what_is_inferred_by_default(cp: ControlPlane) -> None:
    r = cli(cp, cp.admin_key, "model", "upload", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # argparse wraps lines
    assert "what is inferred when not given:" in text
    assert " ".join(MAX_BATCH_SIZE_RULE.split()) in text  # the server's own rule, word for word
    assert "--inputs, --outputs: read from an ONNX file" in text
    assert "--config FILE" in text and "config.pbtxt" in text
