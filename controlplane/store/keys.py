"""Where every piece of inferplex metadata lives in the store.

All keys sit under one prefix, so one etcd cluster can be shared and one
``delete_prefix`` wipes a test run. Values are JSON (see ``StateStore.*_json``)
unless noted. "CAS" marks records that are read-modify-written and must be
updated with ``compare_and_set`` on the revision read (``update_json``);
"create" marks records made unique by create-if-absent; "lease" marks records
bound to a lease, which vanish when their owner stops refreshing it.

::

    /inferplex/
      tenants/{tenant}                                  tenant record: quotas, state      create, CAS
      apikeys/{sha256}                                  API key hash -> tenant, role       create, CAS
      models/{tenant}/{model}                           model record: SLO, latest version  create, CAS
      models/{tenant}/{model}/versions/{version}        version: artifact sha256, format   create
      instances/{instance_id}                           registered instance: URL, memory   lease (its own)
      placement/{instance_id}/{qualified_model}         desired placement of a model       leader writes, CAS
      profiles/{qualified_model}/{version}/{instance_class}
                                                        observed load/exec latency         single writer, put
      leader/placement                                  placement leader's identity        lease + create

Listing ``models_of(tenant)`` returns model records and their versions; tell
them apart with ``segments(key)`` (a model record has 3 segments, a version 5).
Prefix helpers end in ``/`` so a listing of ``models/acme/`` never includes
``models/acme2/``. Names are validated by their owners (tenants/, controlplane/)
before they reach a key; this module only refuses a ``/`` that would change the
layout. ``qualified_model`` is the tenant-qualified instance-level name.
"""

from __future__ import annotations

from controlplane.store.base import PREFIX

TENANTS = PREFIX + "tenants/"
APIKEYS = PREFIX + "apikeys/"
MODELS = PREFIX + "models/"
INSTANCES = PREFIX + "instances/"
PLACEMENT = PREFIX + "placement/"
PROFILES = PREFIX + "profiles/"
LEADER_PLACEMENT = PREFIX + "leader/placement"


def _seg(value: str, what: str) -> str:
    if not value or "/" in value:
        raise ValueError(f"{what} {value!r} must be non-empty and contain no '/'")
    return value


def tenant(name: str) -> str:
    return TENANTS + _seg(name, "tenant")


def apikey(sha256_hex: str) -> str:
    return APIKEYS + _seg(sha256_hex, "API key hash")


def models_of(tenant_name: str) -> str:
    """Prefix of one tenant's models (records and versions)."""
    return f"{MODELS}{_seg(tenant_name, 'tenant')}/"


def model(tenant_name: str, model_name: str) -> str:
    return models_of(tenant_name) + _seg(model_name, "model")


def model_versions(tenant_name: str, model_name: str) -> str:
    """Prefix of one model's versions."""
    return model(tenant_name, model_name) + "/versions/"


def model_version(tenant_name: str, model_name: str, version: int | str) -> str:
    return model_versions(tenant_name, model_name) + _seg(str(version), "version")


def instance(instance_id: str) -> str:
    return INSTANCES + _seg(instance_id, "instance id")


def placements_on(instance_id: str) -> str:
    """Prefix of the desired placements on one instance."""
    return f"{PLACEMENT}{_seg(instance_id, 'instance id')}/"


def placement(instance_id: str, qualified_model: str) -> str:
    return placements_on(instance_id) + _seg(qualified_model, "model")


def profiles_of(qualified_model: str) -> str:
    return f"{PROFILES}{_seg(qualified_model, 'model')}/"


def profile(qualified_model: str, version: int | str, instance_class: str) -> str:
    return f"{profiles_of(qualified_model)}{_seg(str(version), 'version')}/" + _seg(
        instance_class, "instance class"
    )


def segments(key: str) -> list[str]:
    """``/inferplex/models/acme/resnet`` -> ``["models", "acme", "resnet"]``."""
    if not key.startswith(PREFIX):
        raise ValueError(f"{key!r} is not an inferplex key (must start with {PREFIX})")
    return key.removeprefix(PREFIX).split("/")
