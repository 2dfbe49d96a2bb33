"""How the driver reads an instance's error: by gRPC status code, never by wording."""

from __future__ import annotations

from tritonclient.utils import InferenceServerException

from kserve.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from placement.triton_driver import Unreachable, _map_error


def _exc(status: str, msg: str) -> InferenceServerException:
    # how tritonclient.grpc(.aio) reports an RpcError
    return InferenceServerException(msg=msg, status=status)


def test_a_load_refused_for_memory_is_resource_exhausted() -> None:
    exc = _exc("StatusCode.RESOURCE_EXHAUSTED", "insufficient memory budget to load 'm': needs 9")
    err = _map_error(exc, "w1", "loading m", load=True)
    assert isinstance(err, ResourceExhausted) and err.message.startswith("insufficient memory budget")


def test_other_load_failures_are_the_model_s_fault() -> None:
    err = _map_error(_exc("StatusCode.INVALID_ARGUMENT", "bad onnx"), "w1", "loading m", load=True)
    assert isinstance(err, InvalidArgument) and "refused to load" in err.message


def test_unreachable_and_not_found() -> None:
    assert isinstance(_map_error(_exc("StatusCode.UNAVAILABLE", "down"), "w1", "x", load=True), Unreachable)
    # a client deadline is not a dead instance: the request may still be running there
    late = _map_error(_exc("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded"), "w1", "running m")
    assert isinstance(late, Unavailable) and not isinstance(late, Unreachable)
    assert isinstance(_map_error(_exc("StatusCode.NOT_FOUND", "no m"), "w1", "unloading m"), NotFound)
