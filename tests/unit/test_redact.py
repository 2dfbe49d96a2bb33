"""What a tenant may read of an error: the pure rewriting (controlplane.redact.public_text)."""

from __future__ import annotations

import pytest

from controlplane.redact import public_text


@pytest.mark.parametrize(("message", "public"), [
    ("failed to load 'acme__m': Load model from /tmp/pytest-7/w0/acme__m/1/model.onnx failed",
     "failed to load 'm': Load model from a server path failed"),
    ("failed to load '_profile__acme__m': bad graph", "failed to load 'm': bad graph"),
    ("no instance has room for 5 bytes (most free: 3 bytes on worker-0); add an instance",
     "no instance has room for 5 bytes (most free: 3 bytes on an instance); add an instance"),
    ("instance w-127.0.0.1-5001 is unreachable while running globex__x: ConnectError('127.0.0.1:5001')",
     "instance an instance is unreachable while running another model: ConnectError('an internal address')"),
    ("etcd at localhost:2379 did not answer get /inferplex/apikeys/ab12 (timeout)",
     "etcd at an internal address did not answer get a server path (timeout)"),
    ("probe failed: cannot open http://10.0.0.5:8000/v2/models/acme__m", "probe failed: cannot open an internal address"),
    # advice and the caller's own words stay as they are
    ("upload models with POST /v1/models, as application/octet-stream or multipart/form-data",
     "upload models with POST /v1/models, as application/octet-stream or multipart/form-data"),
    ("input 'INPUT0': expected shape [1, 64], got [2, 64]", "input 'INPUT0': expected shape [1, 64], got [2, 64]"),
])
def test_internal_names_paths_and_addresses_become_plain_words(message: str, public: str) -> None:
    assert public_text(message, "acme") == public


def test_names_the_caller_sent_are_shown_back_and_known_instance_ids_are_hidden() -> None:
    msg = "Request for unknown model: 'ab__c' is not found on gpu-node-7"
    assert public_text(msg, "acme", keep={"ab__c"}, instances=["gpu-node-7"]) == \
        "Request for unknown model: 'ab__c' is not found on an instance"
    assert public_text(msg, "acme") == "Request for unknown model: 'another model' is not found on gpu-node-7"
