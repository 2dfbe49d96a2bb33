"""Hostile model uploads against ``inferplex up`` as a real process: each file of the
hostile corpus is refused with its reason, the operator's admin key is neither read nor
touched, and another tenant's inference keeps being served throughout; a large valid
upload is parsed and checked outside the control plane's process."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.integration.cp_harness import ControlPlane, OtherTenant, http_infer, running_up
from tests.support import hostile_models, models


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root: Path = tmp_path_factory.mktemp("hostile-uploads")
    with running_up(root / "data", root / "up.log", workers=1,
                    env={"INFERPLEX_PROFILE_ON_UPLOAD": "false"}) as cp:
        yield cp


@pytest.fixture(scope="module")
def keys(cp: ControlPlane) -> dict[str, str]:
    keys = {"mallory": cp.create_tenant("mallory"), "globex": cp.create_tenant("globex")}
    assert cp.upload(keys["globex"], "mlp", models.mlp_onnx().data).status_code == 201
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(http_infer(cp, keys["globex"], "mlp", x), models.mlp_reference(x), rtol=1e-4)
    return keys


def test_every_hostile_model_is_refused_with_its_reason_while_another_tenant_is_served(
        cp: ControlPlane, keys: dict[str, str]) -> None:
    admin_key = cp.data_dir / "admin.key"
    before = admin_key.read_bytes()
    corpus = [*hostile_models.torchscript_corpus(str(admin_key)), *hostile_models.onnx_corpus()]

    def upload(hostile: hostile_models.Hostile) -> tuple[str, int, str]:
        name = hostile.artifact.config["name"].replace("_", "-")
        r = cp.upload(keys["mallory"], name, hostile.data, **hostile.upload)
        return name, r.status_code, r.json().get("error", r.text)

    with OtherTenant(cp, keys["globex"]) as other, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(upload, corpus))
    for hostile, (name, status, error) in zip(corpus, answers, strict=True):
        assert status == 400 and hostile.refusal in error, (name, status, error)
        assert "mallory__" not in error and str(cp.data_dir) not in error, error  # nothing internal
    assert other.failures == []
    assert max(other.latencies) < 5.0, sorted(other.latencies)[-5:]
    assert admin_key.read_bytes() == before
    with cp.client(keys["mallory"]) as c:
        assert c.get("/v1/models").json() == {"models": []}  # nothing half-stored


def test_a_runaway_loop_is_valid_at_upload(cp: ControlPlane, keys: dict[str, str]) -> None:
    # only a time limit on its executions stops it (the worker's bounded execution)
    r = cp.upload(keys["mallory"], "loop", hostile_models.runaway_loop().data)
    assert r.status_code == 201, r.text
    assert [t["name"] for t in r.json()["inputs"]] == ["TRIPS", "INPUT0"]


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_large_upload_is_parsed_outside_the_control_plane(cp: ControlPlane, keys: dict[str, str]) -> None:
    rows = 30_000  # a [30000, 1000] FP32 initializer: 120 MB
    weight = numpy_helper.from_array(np.zeros((rows, 1000), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["INPUT0", "W"], ["OUTPUT0"])], "big",
                              [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", rows])],
                              [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 1000])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", models.ONNX_OPSET)])
    model.ir_version = models.ONNX_IR_VERSION
    data = model.SerializeToString()
    del model, weight, graph
    pid = cp.proc.popen.pid
    peak_before = _peak_rss(pid)
    with OtherTenant(cp, keys["globex"]) as other:
        r = cp.upload(keys["globex"], "big", data)
    assert r.status_code == 201, r.text
    assert r.json()["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "dims": [rows]}]
    # parsed in this process, the file would have been held at least once, and its proto again
    assert _peak_rss(pid) - peak_before < len(data) // 2, (peak_before, _peak_rss(pid), len(data))
    assert other.failures == [] and other.latencies
    assert max(other.latencies) < 2.0, sorted(other.latencies)[-5:]
