"""Where every piece of inferplex metadata lives in the store.

All keys sit under one prefix, so one etcd cluster can be shared and one
``delete_prefix`` wipes a test run. Values are JSON (see ``StateStore.*_json``)
unless noted. "CAS" marks records that are read-modify-written and must be
updated with ``compare_and_set`` on the revision read (``update_json``);
"create" marks records made unique by create-if-absent; "lease" marks records
bound to a lease, which vanish when their owner stops refreshing it.

::

    /inferplex/
      tenants/{tenant}                                  tenant record: quotas, state        create, CAS
      apikeys/{sha256}                                  API key hash -> tenant, role, expiry create, CAS
      bootstrap/admin-key                               marker: the first admin key exists  create
      models/{tenant}/{model}/{version}                 model version: artifact sha256,     create, CAS
                                                        format, specs, SLO, status, profile
      instances/{instance_id}                           registered instance: URLs, memory,  lease (its own,
                                                        class                               when self-registered)
      placement/{instance_id}/{qualified_model}         a model placed on an instance       CAS
      leader/placement                                  placement leader's identity         lease + create
      drain/{instance_id}                               marker: the operator drains it      put, delete
      demand/{replica_id}                               a replica's per-model request rates lease (its own)

A model version's latency profile (per instance class) is stored inside its record
(``profile``), so a version and its profile are read and deleted together.

Prefix helpers end in ``/`` so a listing of ``models/acme/`` never includes
``models/acme2/``. Names are validated by their owners (tenants/, controlplane/)
before they reach a key; this module only refuses a ``/`` that would change the
layout. ``qualified_model`` is the tenant-qualified instance-level name.
"""

from __future__ import annotations

from store.base import PREFIX

TENANTS = PREFIX + "tenants/"
APIKEYS = PREFIX + "apikeys/"
MODELS = PREFIX + "models/"
INSTANCES = PREFIX + "instances/"
PLACEMENT = PREFIX + "placement/"
BOOTSTRAP_ADMIN = PREFIX + "bootstrap/admin-key"
LEADER_PLACEMENT = PREFIX + "leader/placement"
DRAINS = PREFIX + "drain/"
DEMAND = PREFIX + "demand/"


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


def versions_of(tenant_name: str, model_name: str) -> str:
    """Prefix of one model's versions."""
    return model(tenant_name, model_name) + "/"


def model_version(tenant_name: str, model_name: str, version: int | str) -> str:
    return versions_of(tenant_name, model_name) + _seg(str(version), "version")

def instance(instance_id: str) -> str:
    return INSTANCES + _seg(instance_id, "instance id")


def drain(instance_id: str) -> str:
    """Marker that the operator drains an instance (kept apart from its record, which a
    self-registered worker rewrites)."""
    return DRAINS + _seg(instance_id, "instance id")


def demand(replica_id: str) -> str:
    """A replica's published demand, for the placement leader (``placement/demand_share.py``)."""
    return DEMAND + _seg(replica_id, "replica id")


def placements_on(instance_id: str) -> str:
    """Prefix of the desired placements on one instance."""
    return f"{PLACEMENT}{_seg(instance_id, 'instance id')}/"


def placement(instance_id: str, qualified_model: str) -> str:
    return placements_on(instance_id) + _seg(qualified_model, "model")


def segments(key: str) -> list[str]:
    """``/inferplex/models/acme/resnet`` -> ``["models", "acme", "resnet"]``."""
    if not key.startswith(PREFIX):
        raise ValueError(f"{key!r} is not an inferplex key (must start with {PREFIX})")
    return key.removeprefix(PREFIX).split("/")
