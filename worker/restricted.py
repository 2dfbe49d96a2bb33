"""The worker's restricted APIs, as Triton's ``--http-restricted-api`` and
``--grpc-restricted-protocol`` (see kserve/restricted.py for the protocol).

Where the rules come from (``inferplex worker``):
- the two flags, as on tritonserver (repeatable, one group list each);
- else ``INFERPLEX_INSTANCE_RESTRICTED_VALUE`` (and ``_KEY``), the control plane's own
  settings: every group but health, on both protocols (``inferplex up`` passes its
  workers the credential this way, out of sight of ``ps``);
- else, with ``--register``: every group but health is locked behind a random value
  nobody knows until the registration answer hands over the control plane's credential,
  so the worker never serves an unlocked API;
- else nothing is restricted (Triton's default), which only a loopback worker may do.

A refusal is Triton's exactly: HTTP 403 ``{"error": "This API is restricted, expecting
header '<key>'"}`` (src/http_server.cc, RespondIfRestricted: EVHTP_RES_FORBIDDEN), and
gRPC UNAVAILABLE ``This protocol is restricted, expecting header
'triton-grpc-protocol-<key>'`` (src/grpc/grpc_server.cc, CommonCallData::Execute;
src/grpc/infer_handler.cc for ModelInfer). The value is compared in constant time.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from kserve.errors import PermissionDenied
from kserve.restricted import (
    CONTROL_PLANE_GROUPS,
    DEFAULT_KEY,
    GROUPS,
    GRPC_KEY_PREFIX,
    InstanceCredential,
    check_key,
    check_value,
)

log = logging.getLogger(__name__)

ENV_KEY = "INFERPLEX_INSTANCE_RESTRICTED_KEY"
ENV_VALUE = "INFERPLEX_INSTANCE_RESTRICTED_VALUE"
HTTP_FLAG, GRPC_FLAG = "http-restricted-api", "grpc-restricted-protocol"

# Triton's grouping of the gRPC methods (src/grpc/grpc_server.cc, the Register* calls)
_GRPC_GROUPS = {
    "/grpc.health.v1.Health/Check": "health",
    **{f"/inference.GRPCInferenceService/{name}": group for group, names in (
        ("health", ("ServerLive", "ServerReady", "ModelReady")),
        ("metadata", ("ServerMetadata", "ModelMetadata")),
        ("inference", ("ModelInfer", "ModelStreamInfer")),
        ("model-config", ("ModelConfig",)),
        ("statistics", ("ModelStatistics",)),
        ("model-repository", ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")),
        ("shared-memory", ("SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
                           "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus",
                           "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister")),
        ("trace", ("TraceSetting",)),
        ("logging", ("LogSettings",)),
    ) for name in names},
}


class Restricted(PermissionDenied):
    """A restricted API called without its header, or with the wrong value. Triton answers
    HTTP 403 but gRPC UNAVAILABLE, so this one does too."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class RestrictedSpec:
    """One ``<groups>:<key>=<value>`` flag value."""

    groups: tuple[str, ...]
    key: str
    value: str


def parse_spec(arg: str, flag: str) -> RestrictedSpec:
    """Parse like Triton's ParseRestrictedFeatureOption (the first ':' ends the groups,
    the first '=' after it ends the key; the value may hold either)."""
    kind = "api" if flag == HTTP_FLAG else "protocol"
    usage = f"--{flag} option format is '<{kind}s>:<key>=<value>'. Got {arg}"
    names, colon, rest = arg.partition(":")
    key, equals, value = rest.partition("=")
    if not (colon and equals and names and key and value):
        raise ValueError(usage)
    groups = tuple(names.split(","))
    for group in groups:
        if group not in GROUPS:
            raise ValueError(f"unknown restricted {kind} '{group}' in --{flag}; "
                             f"known: {', '.join(GROUPS)}")
    try:
        return RestrictedSpec(groups, check_key(key), check_value(value))
    except ValueError as exc:
        raise ValueError(f"--{flag}: {exc}") from None


def _arg_type(flag: str) -> Callable[[str], RestrictedSpec]:
    def parse(arg: str) -> RestrictedSpec:
        try:
            return parse_spec(arg, flag)
        except ValueError as exc:  # argparse turns this into a usage error
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


class ProtocolRules:
    """group -> (header key, expected value) for one protocol; rebinding the dict is atomic,
    so gRPC handler threads may read while the event loop adopts a credential."""

    def __init__(self, key_prefix: str) -> None:
        self.key_prefix = key_prefix
        self._rules: dict[str, tuple[str, bytes]] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)

    def groups(self) -> set[str]:
        return set(self._rules)

    def add(self, spec: RestrictedSpec, flag: str) -> None:
        kind = "api" if flag == HTTP_FLAG else "protocol"
        rules = dict(self._rules)
        for group in spec.groups:
            if group in rules:  # Triton's rule: one group, one header
                raise ValueError(f"restricted {kind} '{group}' can not be specified in multiple "
                                 f"config groups (--{flag})")
            rules[group] = (self.key_prefix + spec.key, spec.value.encode())
        self._rules = rules

    def replace(self, groups: Iterable[str], credential: InstanceCredential) -> None:
        rule = (self.key_prefix + credential.key, credential.value.encode())
        self._rules = {**self._rules, **dict.fromkeys(groups, rule)}

    def holds(self, groups: Iterable[str], credential: InstanceCredential) -> bool:
        rule = (self.key_prefix + credential.key, credential.value.encode())
        return all(self._rules.get(g) == rule for g in groups)

    def check(self, group: str, headers: Mapping[str, str]) -> None:
        """Raise Restricted unless ``headers`` (lower-case keys) carry the group's value."""
        rule = self._rules.get(group)
        if rule is None:
            return
        key, expected = rule
        actual = headers.get(key)
        if actual is None or not hmac.compare_digest(actual.encode("utf-8", "surrogateescape"), expected):
            kind = "API" if not self.key_prefix else "protocol"
            raise Restricted(f"This {kind} is restricted, expecting header '{key}'")


@dataclass
class Restrictions:
    http: ProtocolRules = field(default_factory=lambda: ProtocolRules(""))
    grpc: ProtocolRules = field(default_factory=lambda: ProtocolRules(GRPC_KEY_PREFIX))
    # locked behind an unknown value until the control plane's credential arrives
    awaiting_control_plane: bool = False

    def __bool__(self) -> bool:
        return bool(self.http) or bool(self.grpc)

    def lock(self) -> None:
        unknown = InstanceCredential(DEFAULT_KEY, secrets.token_urlsafe(32))
        self.http.replace(CONTROL_PLANE_GROUPS, unknown)
        self.grpc.replace(CONTROL_PLANE_GROUPS, unknown)
        self.awaiting_control_plane = True

    def adopt(self, credential: InstanceCredential) -> None:
        """The control plane's credential, from its registration answer."""
        if self.awaiting_control_plane:
            self.http.replace(CONTROL_PLANE_GROUPS, credential)
            self.grpc.replace(CONTROL_PLANE_GROUPS, credential)
            self.awaiting_control_plane = False
            log.info("restricted APIs now accept the control plane's credential (header %r)", credential.key)
        elif not (self.http.holds(CONTROL_PLANE_GROUPS, credential)
                  and self.grpc.holds(CONTROL_PLANE_GROUPS, credential)):
            log.error("this worker's restricted-API settings differ from the control plane's credential "
                      "(header %r): the control plane will be refused; give both the same value",
                      credential.key)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("restricted APIs (as tritonserver's flags)")
    known = ", ".join(GROUPS)
    g.add_argument(f"--{HTTP_FLAG}", action="append", default=[], type=_arg_type(HTTP_FLAG),
                   metavar="<apis>:<key>=<value>",
                   help=f"HTTP requests to these API groups must carry header <key>: <value> (repeatable; "
                        f"groups: {known})")
    g.add_argument(f"--{GRPC_FLAG}", action="append", default=[], type=_arg_type(GRPC_FLAG),
                   metavar="<protocols>:<key>=<value>",
                   help="gRPC calls to these groups must carry metadata triton-grpc-protocol-<key>: <value> "
                        f"(repeatable). Without either flag: env {ENV_VALUE} (header key {ENV_KEY}, default "
                        f"{DEFAULT_KEY}) restricts every group but health; else --register locks them until "
                        "the control plane hands over its credential")


def from_environment(environ: Mapping[str, str] = os.environ) -> InstanceCredential | None:
    value = environ.get(ENV_VALUE, "")
    if not value:
        return None
    try:
        return InstanceCredential(environ.get(ENV_KEY) or DEFAULT_KEY, value)
    except ValueError as exc:
        raise SystemExit(f"{ENV_KEY}/{ENV_VALUE}: {exc}") from None


def restrictions_from_args(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Restrictions:
    """Bad combinations fail here, before the worker binds its ports."""
    out = Restrictions()
    specs = [(HTTP_FLAG, out.http, s) for s in args.http_restricted_api]
    specs += [(GRPC_FLAG, out.grpc, s) for s in args.grpc_restricted_protocol]
    try:
        for flag, rules, spec in specs:
            rules.add(spec, flag)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if specs:
        return out
    credential = from_environment(environ)
    if credential is not None:
        out.http.replace(CONTROL_PLANE_GROUPS, credential)
        out.grpc.replace(CONTROL_PLANE_GROUPS, credential)
    elif args.register:
        out.lock()
    elif args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--host {args.host} would let anyone who can reach this worker run, load and list "
                         f"models: restrict its APIs with --{HTTP_FLAG} and --{GRPC_FLAG}, set {ENV_VALUE} "
                         "to the control plane's value, or --register with the control plane")
    return out


# ---------------------------------------------------------------- gRPC enforcement

def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    return {m.key: m.value for m in details.invocation_metadata or ()  # type: ignore[attr-defined]
            if isinstance(m.value, str)}


def _refusal(rules: ProtocolRules, details: grpc.HandlerCallDetails) -> Restricted | None:
    group = _GRPC_GROUPS.get(details.method)  # type: ignore[attr-defined]
    if group is None:
        return None
    try:
        rules.check(group, _metadata(details))
    except Restricted as exc:
        return exc
    return None


def _refuse(exc: Restricted, stream: bool) -> grpc.RpcMethodHandler:
    def abort(_: Any, context: grpc.ServicerContext) -> None:
        context.abort(exc.grpc_code, exc.message)

    if stream:
        return grpc.stream_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


def _arefuse(exc: Restricted, stream: bool) -> grpc.RpcMethodHandler:
    async def abort(_: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(exc.grpc_code, exc.message)

    if stream:
        return grpc.stream_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class GrpcRestriction(grpc.ServerInterceptor):
    """The sync server's check, before the call reaches its handler."""

    def __init__(self, rules: ProtocolRules) -> None:
        self.rules = rules

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        exc = _refusal(self.rules, handler_call_details)
        if exc is None:
            return continuation(handler_call_details)
        return _refuse(exc, handler_call_details.method.endswith("StreamInfer"))  # type: ignore[attr-defined]


class AioGrpcRestriction(grpc.aio.ServerInterceptor):
    def __init__(self, rules: ProtocolRules) -> None:
        self.rules = rules

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        exc = _refusal(self.rules, handler_call_details)
        if exc is None:
            return await continuation(handler_call_details)
        return _arefuse(exc, handler_call_details.method.endswith("StreamInfer"))  # type: ignore[attr-defined]
