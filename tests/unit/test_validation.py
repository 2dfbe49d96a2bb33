"""Upload validation: format by content, ONNX checks and inference (the probe's own
functions, in this process), the merge with what the tenant declared, and the probe as
the confined child the control plane runs."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest

from controlplane.validation import (
    TensorSpec,
    TorchScriptSignature,
    ValidatedModel,
    check_onnx,
    check_torchscript,
    probe_model,
    validate_model,
)
from kserve.errors import InvalidArgument
from tests.support import models
from worker.sandbox.probe import NOT_TORCHSCRIPT, UNKNOWN_FORMAT, inspect_model, sniff_format


def write(tmp_path: Path, data: bytes, name: str = "upload.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def spec(name: str, datatype: str, dims: list[int]) -> TensorSpec:
    return TensorSpec(name=name, datatype=datatype, dims=dims)


def validate_onnx(path: Path, *, inputs: list[TensorSpec] | None, outputs: list[TensorSpec] | None,
                  max_batch_size: int | None) -> ValidatedModel:
    """What validate_model does for an ONNX file, without the child: the probe's report
    merged with the declarations."""
    report = inspect_model(path.read_bytes(), name="m", max_tensor_bytes=1 << 30)
    return check_onnx([TensorSpec(**t) for t in report["inputs"]], [TensorSpec(**t) for t in report["outputs"]],
                      inputs=inputs, outputs=outputs, max_batch_size=max_batch_size)


def test_format_is_decided_by_content_not_name() -> None:
    assert sniff_format(models.simple().data) == "onnx"
    assert sniff_format(models.mlp_torchscript().data) == "torchscript"


def test_plain_pickle_is_refused_without_unpickling() -> None:
    with pytest.raises(InvalidArgument, match="torch.jit.save"):
        sniff_format(models.pickle_pt())


def test_state_dict_zip_is_refused_as_not_torchscript() -> None:
    with pytest.raises(InvalidArgument) as err:
        sniff_format(models.state_dict_pt())
    assert err.value.message == NOT_TORCHSCRIPT


def test_other_zip_and_empty_file_are_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(InvalidArgument) as err:
        sniff_format(buf.getvalue())
    assert err.value.message == UNKNOWN_FORMAT
    with pytest.raises(InvalidArgument, match="empty upload"):
        sniff_format(b"")


@pytest.mark.parametrize("data", [models.corrupt_onnx(), b"hello, this is not a model\n" * 10])
def test_corrupt_or_foreign_bytes_are_unknown_format(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="unknown model format"):
        validate_onnx(write(tmp_path, data), inputs=None, outputs=None, max_batch_size=None)


def test_onnx_with_external_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="external data: upload one self-contained file"):
        validate_onnx(write(tmp_path, models.onnx_external_data()), inputs=None, outputs=None,
                      max_batch_size=None)


def test_onnx_inputs_outputs_inferred_and_batch_dim_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, models.mlp_onnx().data)
    v = validate_onnx(path, inputs=None, outputs=None, max_batch_size=None)
    assert (v.platform, v.filename, v.max_batch_size) == ("onnxruntime_onnx", "model.onnx", 8)
    assert v.inputs == [spec("INPUT0", "FP32", [64])]  # initializers W1.. are not inputs
    assert v.outputs == [spec("OUTPUT0", "FP32", [10])]
    v0 = validate_onnx(path, inputs=None, outputs=None, max_batch_size=0)
    assert v0.inputs == [spec("INPUT0", "FP32", [-1, 64])]


def test_declared_specs_must_match_the_onnx_file(tmp_path: Path) -> None:
    path = write(tmp_path, models.simple().data)
    ok = [spec("INPUT1", "INT32", [-1]), spec("INPUT0", "INT32", [16])]
    v = validate_onnx(path, inputs=ok, outputs=None, max_batch_size=8)
    assert v.inputs == [spec("INPUT1", "INT32", [16]), spec("INPUT0", "INT32", [16])]
    with pytest.raises(InvalidArgument, match=r"declared inputs \['INPUT0'\] do not match"):
        validate_onnx(path, inputs=[spec("INPUT0", "INT32", [16])], outputs=None, max_batch_size=8)
    with pytest.raises(InvalidArgument, match="'INPUT0': declared datatype FP32 but the model file has INT32"):
        validate_onnx(path, inputs=[spec("INPUT0", "FP32", [16]), spec("INPUT1", "INT32", [16])],
                      outputs=None, max_batch_size=8)
    with pytest.raises(InvalidArgument, match=r"declared dims \[4\] are incompatible .* \[16\]"):
        validate_onnx(path, inputs=None, outputs=[spec("OUTPUT0", "INT32", [4]), spec("OUTPUT1", "INT32", [16])],
                      max_batch_size=8)


def test_batching_needs_a_dynamic_first_dimension(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = write(tmp_path, model.SerializeToString())
    assert validate_onnx(path, inputs=None, outputs=None, max_batch_size=None).max_batch_size == 0
    with pytest.raises(InvalidArgument, match="send max_batch_size=0"):
        validate_onnx(path, inputs=None, outputs=None, max_batch_size=4)


def test_tensor_spec_rejects_unknown_datatype() -> None:
    with pytest.raises(ValueError, match="unknown datatype 'FLOAT32'"):
        TensorSpec(name="x", datatype="FLOAT32", dims=[1])


SIG = TorchScriptSignature(args=[("x", "Tensor")], returns=["Tensor"])


def test_torchscript_needs_declared_specs_and_matching_counts() -> None:
    with pytest.raises(InvalidArgument, match="need declared inputs and outputs"):
        check_torchscript(SIG, inputs=None, outputs=None, max_batch_size=4)
    with pytest.raises(InvalidArgument, match="declared 2 inputs but forward takes 1"):
        check_torchscript(SIG, inputs=[spec("a", "FP32", [1]), spec("b", "FP32", [1])],
                          outputs=[spec("y", "FP32", [1])], max_batch_size=4)
    two = TorchScriptSignature(args=[("x", "Tensor")], returns=["Tuple[Tensor, Tensor]"])
    with pytest.raises(InvalidArgument, match="declare 2"):
        check_torchscript(two, inputs=[spec("x", "FP32", [1])], outputs=[spec("y", "FP32", [1])],
                          max_batch_size=4)
    v = check_torchscript(SIG, inputs=[spec("INPUT__0", "FP32", [64])],
                          outputs=[spec("OUTPUT__0", "FP32", [10])], max_batch_size=None)
    assert (v.platform, v.filename, v.max_batch_size) == ("pytorch_libtorch", "model.pt", 0)


async def test_torchscript_loads_in_a_child_and_reports_its_signature(tmp_path: Path) -> None:
    path = write(tmp_path, models.mlp_torchscript().data)
    v = await validate_model(path, inputs=[spec("INPUT__0", "FP32", [64])],
                             outputs=[spec("OUTPUT__0", "FP32", [10])], max_batch_size=16)
    assert v.format == "torchscript" and v.max_batch_size == 16


async def test_damaged_torchscript_archive_is_refused_by_the_child(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(models.mlp_torchscript().data)) as src, \
            zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("data.pkl"):  # drop the module's state
                dst.writestr(item, src.read(item))
    path = write(tmp_path, buf.getvalue())
    with pytest.raises(InvalidArgument, match="torch.jit.load could not load the file"):
        await validate_model(path, inputs=[spec("x", "FP32", [64])], outputs=[spec("y", "FP32", [10])],
                             max_batch_size=0)


async def test_onnx_that_passes_the_checker_but_not_the_runtime_is_refused_before_storing(
        tmp_path: Path) -> None:
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(  # Add of INT32 and FP32: the checker does not look at types
        [onnx.helper.make_node("Add", ["x", "y"], ["z"])], "mixed",
        [tensor("x", onnx.TensorProto.INT32, [2]), tensor("y", onnx.TensorProto.FLOAT, [2])],
        [tensor("z", onnx.TensorProto.FLOAT, [2])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    with pytest.raises(InvalidArgument, match="ONNX Runtime cannot load this model.*Type Error"):
        await validate_model(write(tmp_path, model.SerializeToString()), inputs=None, outputs=None,
                             max_batch_size=None)


async def test_a_valid_onnx_model_passes_the_runtime_probe(tmp_path: Path) -> None:
    validated = await validate_model(write(tmp_path, models.mlp_onnx().data), inputs=None, outputs=None,
                                     max_batch_size=None)
    assert validated.platform == "onnxruntime_onnx"


def _onnx_one_node(op: str, x: onnx.ValueInfoProto, y: onnx.ValueInfoProto) -> bytes:
    graph = onnx.helper.make_graph([onnx.helper.make_node(op, ["x"], ["y"])], "g", [x], [y])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()


def test_onnx_tensor_types_map_to_v2_datatypes_and_the_rest_are_named(tmp_path: Path) -> None:
    tensor = onnx.helper.make_tensor_value_info
    for onnx_type, v2 in ((onnx.TensorProto.FLOAT, "FP32"), (onnx.TensorProto.STRING, "BYTES"),
                          (onnx.TensorProto.BFLOAT16, "BF16"), (onnx.TensorProto.BOOL, "BOOL")):
        data = _onnx_one_node("Identity", tensor("x", onnx_type, [2, "n"]), tensor("y", onnx_type, [2, "n"]))
        v = validate_onnx(write(tmp_path, data), inputs=None, outputs=None, max_batch_size=None)
        assert (v.inputs, v.outputs) == ([spec("x", v2, [2, -1])], [spec("y", v2, [2, -1])])
    data = _onnx_one_node("Identity", tensor("x", onnx.TensorProto.COMPLEX64, [2]),
                          tensor("y", onnx.TensorProto.COMPLEX64, [2]))
    with pytest.raises(InvalidArgument) as err:
        validate_onnx(write(tmp_path, data), inputs=None, outputs=None, max_batch_size=None)
    assert err.value.message.startswith(
        "tensor 'x' has ONNX element type COMPLEX64, which has no KServe v2 datatype; use one of")


def test_onnx_inputs_that_are_not_tensors_are_refused(tmp_path: Path) -> None:
    seq = onnx.helper.make_tensor_sequence_value_info("x", onnx.TensorProto.FLOAT, [2])
    data = _onnx_one_node("SequenceLength", seq, onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, []))
    with pytest.raises(InvalidArgument) as err:
        validate_onnx(write(tmp_path, data), inputs=None, outputs=None, max_batch_size=None)
    assert err.value.message == ("model tensor 'x' is not a tensor (sequence/map/optional): only tensor "
                                 "inputs and outputs are served")


async def test_a_probe_past_its_time_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="checking the model took over 0s: upload a smaller model"):
        await probe_model(write(tmp_path, models.mlp_onnx().data), name="m", timeout_s=0.01)


async def test_a_probe_that_dies_is_a_refusal_that_names_nothing_internal(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(InvalidArgument) as err:
        await probe_model(tmp_path / "folder", name="m")  # the child's read raises: no report
    assert err.value.message.startswith("the model file could not be checked")
    assert str(tmp_path) not in err.value.message


def test_the_probe_parses_only_once_it_is_confined(tmp_path: Path) -> None:
    """What a parser bug an upload exploited could do next: open a file. Past confine() it
    cannot, so the probe dies instead of reading it."""
    path = write(tmp_path, models.mlp_onnx().data)
    script = (
        "import sys\n"
        "import worker.sandbox.probe as probe\n"
        "def exploited(data, **_):\n"
        "    return {'stolen': open(sys.argv[2]).read()}\n"
        "probe.inspect_model = exploited\n"
        "sys.exit(probe.main([sys.argv[1], '--memory-extra', str(1 << 30), '--max-tensor-bytes', '1024']))\n"
    )
    secret = write(tmp_path, b"secret", "secret.txt")
    secret.chmod(0o644)
    done = subprocess.run([sys.executable, "-c", script, str(path), str(secret)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "secret" not in done.stdout, done.stdout
    assert "PermissionError" in done.stderr, done.stderr[-500:]
