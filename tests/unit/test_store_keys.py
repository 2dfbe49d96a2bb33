"""The key layout: prefixes isolate siblings, and names cannot break the layout."""

from __future__ import annotations

import pytest

from store import keys


def test_keys_follow_the_documented_layout() -> None:
    assert keys.tenant("acme") == "/inferplex/tenants/acme"
    assert keys.apikey("ab12") == "/inferplex/apikeys/ab12"
    assert keys.model("acme", "resnet") == "/inferplex/models/acme/resnet"
    assert keys.model_version("acme", "resnet", 3) == "/inferplex/models/acme/resnet/3"
    assert keys.instance("w1") == "/inferplex/instances/w1"
    assert keys.placement("w1", "acme__resnet") == "/inferplex/placement/w1/acme__resnet"
    assert keys.BOOTSTRAP_ADMIN == "/inferplex/bootstrap/admin-key"
    assert keys.LEADER_PLACEMENT == "/inferplex/leader/placement"


def test_a_tenant_prefix_does_not_cover_a_tenant_whose_name_extends_it() -> None:
    assert not keys.model("acme2", "m").startswith(keys.models_of("acme"))
    assert not keys.placement("w10", "a__m").startswith(keys.placements_on("w1"))
    assert keys.model_version("acme", "m", 1).startswith(keys.model("acme", "m") + "/")
    assert not keys.model_version("acme", "m2", 1).startswith(keys.model("acme", "m") + "/")
    assert keys.versions_of("acme", "m") == keys.model("acme", "m") + "/"
    assert keys.model_version("acme", "m", 1).startswith(keys.versions_of("acme", "m"))
    assert not keys.model_version("acme", "m2", 1).startswith(keys.versions_of("acme", "m"))


def test_segments_split_a_key_below_the_prefix() -> None:
    assert keys.segments(keys.model_version("acme", "m", 1)) == ["models", "acme", "m", "1"]
    with pytest.raises(ValueError, match="not an inferplex key"):
        keys.segments("/other/x")


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_names_that_would_change_the_layout_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="no '/'"):
        keys.tenant(bad)
    with pytest.raises(ValueError, match="no '/'"):
        keys.model("acme", bad)
