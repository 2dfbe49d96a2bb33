"""``inferplex worker``'s --http-restricted-api / --grpc-restricted-protocol: parsed as
tritonserver parses them (bad formats are usage errors), and where the rules come from
when the flags are absent (the control plane's environment, --register, or nowhere)."""

from __future__ import annotations

import argparse

import pytest

from kserve.restricted import CONTROL_PLANE_GROUPS, InstanceCredential
from worker.main import register as register_worker
from worker.restricted import Restricted, parse_spec, restrictions_from_args

CRED = InstanceCredential("k", "secret")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_worker(parser.add_subparsers())
    return parser.parse_args(["worker", *argv])


def test_a_spec_splits_at_the_first_colon_then_the_first_equals_like_triton() -> None:
    spec = parse_spec("inference,model-repository:My-Key=a:b=c", "http-restricted-api")
    assert (spec.groups, spec.key, spec.value) == (("inference", "model-repository"), "my-key", "a:b=c")


@pytest.mark.parametrize(("value", "says"), [
    ("inference", "option format is '<apis>:<key>=<value>'. Got inference"),
    ("inference:key", "option format is"),
    (":key=value", "option format is"),
    ("inference:=value", "option format is"),
    ("inference:key=", "option format is"),
    ("inference,bogus:key=value", "unknown restricted api 'bogus'"),
    ("inference,:key=value", "unknown restricted api ''"),
    ("inference:a key=value", "header key 'a key' must be"),
    ("inference:key-bin=value", "not end in '-bin'"),
    ("inference:key= value", "printable ASCII"),
])
def test_bad_formats_are_usage_errors(value: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _args(f"--http-restricted-api={value}")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--http-restricted-api" in err and says in err


def test_the_grpc_flag_names_protocols() -> None:
    with pytest.raises(SystemExit):
        _args("--grpc-restricted-protocol=health,bogus:k=v")
    with pytest.raises(ValueError, match="unknown restricted protocol 'bogus'"):
        parse_spec("bogus:k=v", "grpc-restricted-protocol")


def test_a_group_may_be_in_one_spec_only_per_protocol() -> None:
    args = _args("--http-restricted-api=inference:a=1", "--http-restricted-api=statistics,inference:b=2")
    with pytest.raises(SystemExit, match="restricted api 'inference' can not be specified in multiple"):
        restrictions_from_args(args, {})
    # the same group on both protocols is fine
    rules = restrictions_from_args(_args("--http-restricted-api=inference:a=1",
                                         "--grpc-restricted-protocol=inference:a=1"), {})
    assert rules.http.groups() == rules.grpc.groups() == {"inference"}


def test_flags_win_over_the_environment_which_restricts_all_but_health() -> None:
    env = {"INFERPLEX_INSTANCE_RESTRICTED_KEY": "k", "INFERPLEX_INSTANCE_RESTRICTED_VALUE": "secret"}
    rules = restrictions_from_args(_args(), env)
    assert rules.http.groups() == rules.grpc.groups() == set(CONTROL_PLANE_GROUPS)
    assert rules.http.holds(CONTROL_PLANE_GROUPS, CRED) and rules.grpc.holds(CONTROL_PLANE_GROUPS, CRED)
    rules = restrictions_from_args(_args("--http-restricted-api=inference:x=y"), env)
    assert rules.http.groups() == {"inference"} and not rules.grpc


def test_checks_refuse_a_missing_or_wrong_value_with_tritons_words() -> None:
    rules = restrictions_from_args(_args("--http-restricted-api=inference:k=secret",
                                         "--grpc-restricted-protocol=inference:k=secret"), {})
    rules.http.check("inference", {"k": "secret"})
    rules.http.check("health", {})  # unrestricted group
    for headers in ({}, {"k": "secreT"}, {"k": "secret "}, {"other": "secret"}):
        with pytest.raises(Restricted) as info:
            rules.http.check("inference", headers)
        assert (info.value.http_status, info.value.message) == (403, "This API is restricted, expecting header 'k'")
    with pytest.raises(Restricted) as info:
        rules.grpc.check("inference", {"k": "secret"})  # gRPC wants the prefixed key
    assert info.value.grpc_code.name == "UNAVAILABLE"
    assert info.value.message == "This protocol is restricted, expecting header 'triton-grpc-protocol-k'"
    rules.grpc.check("inference", {"triton-grpc-protocol-k": "secret"})


def test_a_registering_worker_is_locked_until_it_adopts_the_control_planes_credential() -> None:
    rules = restrictions_from_args(_args("--register", "http://cp:8000"), {})
    assert rules.awaiting_control_plane and rules.http.groups() == set(CONTROL_PLANE_GROUPS)
    with pytest.raises(Restricted):
        rules.http.check("inference", {"inferplex-instance-key": ""})
    rules.adopt(CRED)
    assert not rules.awaiting_control_plane
    rules.http.check("model-repository", {"k": "secret"})
    rules.grpc.check("statistics", {"triton-grpc-protocol-k": "secret"})
    rules.http.check("health", {})


def test_an_open_worker_only_on_loopback() -> None:
    assert not restrictions_from_args(_args(), {})
    with pytest.raises(SystemExit, match="--host 0.0.0.0 would let anyone .* --http-restricted-api"):
        restrictions_from_args(_args("--host", "0.0.0.0"), {})
    assert restrictions_from_args(_args("--host", "0.0.0.0", "--register", "http://cp:8000"), {})
