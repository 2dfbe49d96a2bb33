"""Pure parts of the worker: config parsing and inference, request validation,
byte sizes, the memory budget, and the file safety checks."""

from __future__ import annotations

import argparse
import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from tritonclient.grpc import service_pb2

from kserve import grpc_codec, http_codec
from kserve.errors import InvalidArgument, ResourceExhausted
from kserve.sizes import parse_bytes, size_arg
from kserve.tensors import InferRequest, RequestedOutput, Tensor
from modelfiles import config as cfg
from modelfiles.requests import check_request
from modelfiles.safety import check_torchscript, load_onnx
from tests.support import models
from tests.support.kserve_client_codec import tensor
from worker.memory import MemoryBudget


def _spec(kind: str = "simple", name: str = "simple") -> cfg.ModelSpec:
    art = models.BUILDERS[kind](name)
    config = cfg.parse_json(art.config, name)
    cfg.resolve_platform(config, None)
    return cfg.spec_of(config)


def _request(*tensors: Tensor, outputs: list[str] | None = None) -> InferRequest:
    return InferRequest("simple", "", "", {}, list(tensors), [RequestedOutput(o) for o in outputs or []])


def _t(name: str, shape: list[int], dtype=np.int32) -> Tensor:
    return tensor(name, np.zeros(shape, dtype))


def test_valid_request_gives_inputs_outputs_and_batch_size() -> None:
    checked = check_request(_spec(), _request(_t("INPUT0", [3, 16]), _t("INPUT1", [3, 16])))
    assert checked.batch_size == 3
    assert checked.output_names == ["OUTPUT0", "OUTPUT1"]
    assert set(checked.inputs) == {"INPUT0", "INPUT1"}


@pytest.mark.parametrize(("tensors", "message"), [
    ([_t("INPUT0", [1, 16]), _t("X", [1, 16])], "unexpected inference input 'X' for model 'simple'"),
    ([_t("INPUT0", [1, 16])], "expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) ['INPUT0'], "
                              "but missing required input(s) ['INPUT1']"),
    ([_t("INPUT0", [1, 16]), _t("INPUT1", [1, 16], np.float32)],
     "inference input 'INPUT1' data-type is 'FP32', but model 'simple' expects 'INT32'"),
    ([_t("INPUT0", [1, 16]), _t("INPUT1", [1, 8])],
     "unexpected shape for input 'INPUT1' for model 'simple'. Expected [-1,16], got [1,8]"),
    # Triton reads a missing batch dimension's first dimension as the batch size
    ([_t("INPUT0", [16]), _t("INPUT1", [16])], "batch-size must be <= 8 for 'simple'"),
    ([_t("INPUT0", [4]), _t("INPUT1", [4])], "Expected [-1,16], got [4]. NOTE: Setting a non-zero max_batch_size"),
    ([_t("INPUT0", [2, 16]), _t("INPUT1", [3, 16])], "batch size does not match"),
    ([_t("INPUT0", [9, 16]), _t("INPUT1", [9, 16])], "batch-size must be <= 8 for 'simple'"),
    ([_t("INPUT0", [0, 16]), _t("INPUT1", [0, 16])], "at least 1"),
])
def test_bad_requests_get_tritons_wording(tensors: list[Tensor], message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_request(_spec(), _request(*tensors))
    assert message in err.value.message


def test_unknown_requested_output_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unexpected inference output 'NOPE' for model 'simple'"):
        check_request(_spec(), _request(_t("INPUT0", [1, 16]), _t("INPUT1", [1, 16]), outputs=["NOPE"]))


def test_variable_dims_accept_any_size() -> None:
    spec = _spec("identity_fp32", "ident")
    assert spec.inputs[0].full_shape(spec.max_batch_size) == [-1, -1]
    checked = check_request(spec, _request(tensor("INPUT0", np.zeros((2, 7), np.float32))))
    assert checked.batch_size == 2


def test_config_inferred_from_onnx_graph_like_triton_autocomplete() -> None:
    art = models.cnn_onnx("c")
    graph = onnx.load_from_string(art.data).graph
    config = cfg.parse_json({"name": "c", "platform": "onnxruntime_onnx"}, "c")
    cfg.complete_from_onnx(config, graph)
    spec = cfg.spec_of(config)
    assert spec.max_batch_size == cfg.INFERRED_MAX_BATCH_SIZE
    assert spec.inputs == (cfg.TensorSpec("INPUT0", "FP32", (3, 32, 32)),)
    assert spec.outputs == (cfg.TensorSpec("OUTPUT0", "FP32", (10,)),)


def test_config_naming_a_tensor_the_graph_lacks_is_refused() -> None:
    art = models.simple("s")
    config = cfg.parse_json(art.config, "s")
    config.input[1].name = "INPUT7"
    with pytest.raises(InvalidArgument, match="unexpected input 'INPUT7'"):
        cfg.complete_from_onnx(config, onnx.load_from_string(art.data).graph)


def test_platform_from_backend_name_and_from_file(tmp_path: Path) -> None:
    config = cfg.parse_json({"name": "m", "backend": "pytorch"}, "m")
    assert cfg.resolve_platform(config, None) == cfg.TORCHSCRIPT
    assert config.default_model_filename == "model.pt"
    (tmp_path / "model.onnx").write_bytes(b"")
    config = cfg.parse_json({"name": "m"}, "m")
    assert cfg.resolve_platform(config, tmp_path) == cfg.ONNX
    with pytest.raises(InvalidArgument, match="unsupported platform/backend 'tensorflow_savedmodel'"):
        cfg.resolve_platform(cfg.parse_json({"name": "m", "platform": "tensorflow_savedmodel"}, "m"), None)


def test_bad_config_json_says_what_is_wrong() -> None:
    with pytest.raises(InvalidArgument, match="not a valid JSON model configuration"):
        cfg.parse_json('{"max_batch_size": "lots"}', "m")
    with pytest.raises(InvalidArgument, match="not valid protobuf text format"):
        cfg.parse_pbtxt("max_batch_size: {", "m")


def test_config_data_types_map_to_v2_and_an_unknown_number_is_refused() -> None:
    config = cfg.parse_json({"name": "m", "max_batch_size": 0,
                             "input": [{"name": "A", "data_type": "TYPE_STRING", "dims": [1]},
                                       {"name": "B", "data_type": "TYPE_BF16", "dims": [1]}],
                             "output": [{"name": "C", "data_type": "TYPE_FP32", "dims": [1]}]}, "m")
    spec = cfg.spec_of(config)
    assert [t.datatype for t in (*spec.inputs, *spec.outputs)] == ["BYTES", "BF16", "FP32"]
    # DataType is an open proto3 enum: a config may carry a number it has no name for
    config = cfg.parse_pbtxt('name: "m" input { name: "A" data_type: 99 dims: 1 } '
                             'output { name: "C" data_type: TYPE_FP32 dims: 1 }', "m")
    with pytest.raises(InvalidArgument, match="unknown model config data type.*99.*use one of TYPE_BOOL"):
        cfg.spec_of(config)


def test_config_json_round_trips_with_integer_dims() -> None:
    config = cfg.parse_json(models.simple().config, "simple")
    assert cfg.to_json(config)["input"][0]["dims"] == [16]
    assert cfg.to_json(config)["max_batch_size"] == 8


@pytest.mark.parametrize(("text", "value"), [("1000", 1000), ("2GiB", 2 * 2**30), ("512MiB", 512 * 2**20),
                                             ("8G", 8 * 10**9), ("1.5Ki", 1536), (123, 123)])
def test_parse_bytes(text: str | int, value: int) -> None:
    assert parse_bytes(text) == value


def test_parse_bytes_refuses_nonsense() -> None:
    with pytest.raises(InvalidArgument, match="write e.g. 2147483648, 2GiB"):
        parse_bytes("lots")


def test_budget_refusal_states_needed_free_and_budget() -> None:
    budget = MemoryBudget(1000)
    budget.charge("a", 700)
    with pytest.raises(ResourceExhausted) as err:
        budget.check("b", 400)
    assert err.value.message == "insufficient memory budget to load 'b': needs 400 bytes, 300 free of 1000 budget"
    budget.check("a", 900, releasing=700)  # a reload may reuse what it replaces
    assert budget.release("a") == 700 and budget.free == 1000


@pytest.mark.parametrize(("data", "message"), [
    (models.pickle_pt(), "not a TorchScript archive"),
    (models.state_dict_pt(), "torch.save'd state_dict"),
])
def test_non_torchscript_files_are_refused_without_unpickling(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    with pytest.raises(InvalidArgument, match=message) as err:
        check_torchscript(path, "m")
    assert "torch.jit.save" in err.value.message


def test_torchscript_archive_passes_the_check(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(models.mlp_torchscript().data)
    check_torchscript(path, "m")


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../x"])
def test_onnx_external_data_outside_the_folder_is_refused(location: str) -> None:
    with pytest.raises(InvalidArgument, match="outside the model's folder"):
        load_onnx({"model.onnx": models.onnx_external_data(location)}, "model.onnx", "m")


def test_onnx_external_data_inside_the_folder_must_exist_and_is_inlined() -> None:
    files = {"model.onnx": models.onnx_external_data("weights.bin")}
    with pytest.raises(InvalidArgument, match="was not provided"):
        load_onnx(files, "model.onnx", "m")
    files["weights.bin"] = np.arange(4, dtype=np.float32).tobytes()
    model, inlined = load_onnx(files, "model.onnx", "m")
    assert inlined
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(t) for t in model.graph.initializer]
    assert any(np.array_equal(w.reshape(-1), np.arange(4, dtype=np.float32)) for w in weights)


def test_corrupt_onnx_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="not a valid ONNX model"):
        load_onnx({"model.onnx": models.corrupt_onnx()}, "model.onnx", "m")


def test_size_arg_makes_a_bad_size_a_usage_error() -> None:
    assert size_arg("2GiB") == 2 << 30
    with pytest.raises(argparse.ArgumentTypeError, match="cannot read 'lots' as a size in bytes"):
        size_arg("lots")


def _bytes_of(count: int) -> bytes:
    return (struct.pack("<I", 2) + b"ab") * count


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_request_the_model_cannot_take_is_refused_before_its_data_is_decoded(transport: str) -> None:
    # a million 2-byte BYTES elements decode to ~43 MB of objects; mlp takes FP32
    raw, count = _bytes_of(1_000_000), 1_000_000
    if transport == "http":
        head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, count],
                                       "parameters": {"binary_data_size": len(raw)}}]}).encode()
        pending = http_codec.parse_infer_request(head + raw, len(head), "mlp", "")
    else:
        pending = grpc_codec.parse_infer_request(service_pb2.ModelInferRequest(
            model_name="mlp", inputs=[service_pb2.ModelInferRequest.InferInputTensor(
                name="INPUT0", datatype="BYTES", shape=[1, count])], raw_input_contents=[raw]))
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument, match="inference input 'INPUT0' data-type is 'BYTES', "
                                                  "but model 'mlp' expects 'FP32'"):
            check_request(_spec("mlp", "mlp"), pending)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"checking allocated {peak} bytes"


def test_a_pending_request_that_fits_is_decoded_and_its_data_checked() -> None:
    x = np.arange(128, dtype=np.float32).reshape(2, 64)
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 64],
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    checked = check_request(_spec("mlp", "mlp"), http_codec.parse_infer_request(head + x.tobytes(), len(head),
                                                                                "mlp", ""))
    assert checked.batch_size == 2 and np.array_equal(checked.inputs["INPUT0"], x)
    bad = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 64],
                                  "data": [1.0] * 100}]}).encode()
    with pytest.raises(InvalidArgument, match="unexpected number of elements 100"):
        check_request(_spec("mlp", "mlp"), http_codec.parse_infer_request(bad, None, "mlp", ""))
