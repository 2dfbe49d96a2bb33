"""Triton's restricted APIs: the header an instance demands before it serves an API group.

NVIDIA Triton takes ``--http-restricted-api=<groups>:<key>=<value>`` and
``--grpc-restricted-protocol=<groups>:<key>=<value>``
(docs/customization_guide/inference_protocols.md, "Limit Endpoint Access"): an HTTP
request to a restricted group must carry the header ``<key>: <value>``, a gRPC call
the metadata ``triton-grpc-protocol-<key>: <value>``. ``inferplex worker`` takes the
same flags, and the control plane sends one such credential to every instance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Triton's RESTRICTED_CATEGORY_NAMES (src/restricted_features.h), in its order
GROUPS = ("health", "metadata", "inference", "shared-memory", "model-config", "model-repository",
          "statistics", "trace", "logging")
# what the control plane's credential unlocks: everything but health, which probes need open
CONTROL_PLANE_GROUPS = tuple(g for g in GROUPS if g != "health")
# Triton's kRestrictedProtocolHeaderTemplate (src/grpc/grpc_server.h)
GRPC_KEY_PREFIX = "triton-grpc-protocol-"
DEFAULT_KEY = "inferplex-instance-key"

# gRPC metadata keys are lower-case tokens ("-bin" ones are binary); values printable ASCII
_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_VALUE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")


def check_key(key: str) -> str:
    """The header key, lower-cased (HTTP headers are case-insensitive, gRPC keys lower-case)."""
    key = key.lower()
    if not _KEY.match(key) or key.endswith("-bin"):
        raise ValueError(f"header key {key!r} must be letters, digits, '-', '_' or '.' "
                         "(and not end in '-bin')")
    return key


def check_value(value: str) -> str:
    if not _VALUE.match(value):
        raise ValueError("header value must be printable ASCII without leading or trailing spaces")
    return value


@dataclass(frozen=True, slots=True)
class InstanceCredential:
    """The header key and value an instance restricts its APIs with."""

    key: str
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", check_key(self.key))
        check_value(self.value)

    def __repr__(self) -> str:  # never log the secret
        return f"InstanceCredential(key={self.key!r}, value=<{len(self.value)} chars>)"

    @property
    def grpc_key(self) -> str:
        return GRPC_KEY_PREFIX + self.key

    def http_headers(self) -> dict[str, str]:
        return {self.key: self.value}

    def grpc_headers(self) -> dict[str, str]:
        """As tritonclient's ``headers=`` (sent as metadata)."""
        return {self.grpc_key: self.value}

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """As a raw gRPC stub's ``metadata=``."""
        return ((self.grpc_key, self.value),)

    def triton_flags(self, groups: tuple[str, ...] = CONTROL_PLANE_GROUPS) -> list[str]:
        """The tritonserver (and ``inferplex worker``) flags that demand this credential."""
        spec = f"{','.join(groups)}:{self.key}={self.value}"
        return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]
