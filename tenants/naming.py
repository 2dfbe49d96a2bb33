"""Names tenants choose, and the instance-level names they never choose.

Tenant names cannot contain '_', so the first '__' in a qualified name always
separates tenant from model: two tenants may both own ``resnet`` and their
instance-level names ``acme__resnet`` and ``globex__resnet`` never collide.
"""

from __future__ import annotations

import re

from kserve.errors import InvalidArgument

TENANT_RE = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SEPARATOR = "__"


def check_tenant_name(name: str) -> str:
    if not TENANT_RE.match(name):
        raise InvalidArgument(
            f"invalid tenant name {name!r}: use 2-32 characters, lowercase letters, digits and '-', "
            "starting with a letter"
        )
    return name


def is_model_name(name: str) -> bool:
    return bool(MODEL_RE.match(name)) and ".." not in name


def check_model_name(name: str) -> str:
    if not is_model_name(name):
        raise InvalidArgument(
            f"invalid model name {name!r}: use 1-64 characters from letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def qualified_name(tenant: str, model: str) -> str:
    return f"{tenant}{SEPARATOR}{model}"


def split_qualified(qualified: str) -> tuple[str, str]:
    tenant, sep, model = qualified.partition(SEPARATOR)
    if not sep:
        raise ValueError(f"not a tenant-qualified model name: {qualified!r}")
    return tenant, model
