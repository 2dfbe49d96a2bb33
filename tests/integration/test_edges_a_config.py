"""A tenant gives a Triton model config with an upload: config.pbtxt text or its JSON form,
checked against the model file's real I/O (real app, real store, the real probe)."""

from __future__ import annotations

import json

import pytest

from tests.support import models
from tests.support.cp_app import RunningApp, blobs, leftovers, upload_multipart, upload_raw

MLP_PBTXT = """
# the MLP's config, as a Triton model repository would hold it
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
"""

PT_JSON = {"backend": "pytorch", "max_batch_size": 16,
           "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [64]}],
           "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [10]}]}


async def test_a_pbtxt_config_sets_io_and_batch_size_checked_against_the_file(
        cp: RunningApp, keys: dict[str, str]) -> None:
    r = await upload_raw(cp, keys["acme"], models.mlp_onnx().data, config=MLP_PBTXT)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "m" and body["platform"] == "onnxruntime_onnx" and body["max_batch_size"] == 4
    assert body["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "dims": [64]}]
    # the -1 the config left open is the file's size
    assert body["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "dims": [10]}]


async def test_a_json_config_file_part_declares_a_torchscript_models_io(
        cp: RunningApp, keys: dict[str, str]) -> None:
    r = await cp.client.post("/v1/models", headers=cp.headers(keys["acme"]), data={"name": "pt"}, files={
        "file": ("model.pt", models.mlp_torchscript().data),
        "config": ("config.json", json.dumps(PT_JSON).encode())})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["platform"] == "pytorch_libtorch" and body["max_batch_size"] == 16
    assert [i["name"] for i in body["inputs"]] == ["INPUT__0"] and body["outputs"][0]["dims"] == [10]


async def test_a_config_without_max_batch_size_follows_the_default_rule(
        cp: RunningApp, keys: dict[str, str]) -> None:
    config = 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 64 ] } ]  # max_batch_size: 2'
    r = await upload_multipart(cp, keys["acme"], models.mlp_onnx().data, name="m", config=config)
    assert r.status_code == 201, r.text
    assert r.json()["max_batch_size"] == 8  # dynamic first dimension: batching by default


@pytest.mark.parametrize(("config", "extra", "error"), [
    (MLP_PBTXT.replace('"INPUT0"', '"IN"'), {},
     "declared inputs ['IN'] do not match the model file's inputs ['INPUT0']: declare exactly the file's "
     "inputs (or leave inputs out to infer them)"),
    (MLP_PBTXT.replace("TYPE_FP32 dims: [ 64 ]", "TYPE_INT64 dims: [ 64 ]"), {},
     "input 'INPUT0': declared datatype INT64 but the model file has FP32"),
    (MLP_PBTXT.replace("onnxruntime_onnx", "pytorch_libtorch"), {},
     "the config says platform 'pytorch_libtorch' but the file is a onnx model ('onnxruntime_onnx'): fix "
     "the config's platform/backend, or leave it out"),
    (MLP_PBTXT + "instance_group [ { kind: KIND_GPU } ]", {},
     "config field 'instance_group' cannot be set by an upload: a config gives name, platform, backend, "
     "max_batch_size, input, output (instances, batching and the rest are the service's)"),
    (MLP_PBTXT + "dynamic_batching { }", {},
     "config field 'dynamic_batching' cannot be set by an upload: a config gives name, platform, backend, "
     "max_batch_size, input, output (instances, batching and the rest are the service's)"),
    (MLP_PBTXT + "bogus_field: 3", {},
     "config is not valid config.pbtxt text (protobuf text format): 8:1 : unknown field 'bogus_field' "
     "in the config (the config gives name, platform, backend, max_batch_size, input, output)"),
    (json.dumps({"input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [64], "reshape": {}}]}), {},
     "config input 'INPUT0': field 'reshape' cannot be set by an upload: an input gives name, data_type, dims"),
    (MLP_PBTXT, {"name": "other"},
     "the config names the model 'm' but name='other': make them the same, or leave the config's name out"),
    (MLP_PBTXT, {"max_batch_size": "2"},
     "give the model's I/O once: either config or max_batch_size, not both"),
    ("{not json", {}, "config looks like JSON but is not valid JSON (Expecting property name enclosed in "
     "double quotes: line 1 column 2 (char 1))"),
])
async def test_a_config_that_is_wrong_or_sets_what_an_upload_may_not_is_refused_clearly(
        cp: RunningApp, keys: dict[str, str], config: str, extra: dict[str, str], error: str) -> None:
    r = await upload_raw(cp, keys["acme"], models.mlp_onnx().data, config=config, **extra)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == error
    assert cp.services.catalog.list("acme") == [] and blobs(cp) == [] and leftovers(cp) == []
