"""API key secrets, hashing, header parsing and the checks a stored record applies."""

from __future__ import annotations

import hashlib

import pytest

from kserve.errors import Unauthenticated
from tenants.keys import (
    EXPIRED_KEY,
    MISSING_KEY,
    UNKNOWN_KEY,
    hash_secret,
    new_record,
    new_secret,
    secret_from_header,
)


def test_secrets_are_random_and_stored_only_as_sha256() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("ipx_") and len(a) >= 40
    assert hash_secret(a) == hashlib.sha256(a.encode()).hexdigest()
    assert a not in new_record("tenant", "acme", None).model_dump_json()


@pytest.mark.parametrize("header", ["Bearer ipx_abc", "bearer ipx_abc", "  Bearer   ipx_abc ", "ipx_abc"])
def test_bearer_or_bare_key_is_accepted(header: str) -> None:
    assert secret_from_header(header) == "ipx_abc"


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer   "])
def test_missing_key_says_how_to_send_one(header: str | None) -> None:
    with pytest.raises(Unauthenticated) as err:
        secret_from_header(header)
    assert err.value.message == MISSING_KEY


def test_revoked_and_expired_records_refuse() -> None:
    record = new_record("tenant", "acme", expires_in_s=10, now=1000.0)
    principal = record.principal(now=1009.9)
    assert (principal.role, principal.tenant, principal.key_id) == ("tenant", "acme", record.key_id)
    with pytest.raises(Unauthenticated) as err:
        record.principal(now=1010.0)
    assert err.value.message == EXPIRED_KEY
    revoked = record.model_copy(update={"revoked": True})
    with pytest.raises(Unauthenticated) as err:
        revoked.principal(now=1000.0)
    assert err.value.message == UNKNOWN_KEY
    assert new_record("admin", None, None, now=0).principal(now=1e12).role == "admin"
