"""Per-tenant quotas: token-bucket rate with the right Retry-After, concurrency cap."""

from __future__ import annotations

import pytest

from admission.model import Refuse, TenantPolicy
from admission.quota import TenantQuota, TokenBucket


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    b = TokenBucket(rate_per_s=10.0, burst=2, now=0.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert b.seconds_until_token(0.0) == pytest.approx(0.1)
    assert not b.take(0.05)
    assert b.take(0.1)


def test_bucket_never_saves_more_than_its_burst() -> None:
    b = TokenBucket(rate_per_s=100.0, burst=3, now=0.0)
    assert b.tokens(1000.0) == 3.0


def test_a_clock_stepping_back_mints_no_tokens() -> None:
    b = TokenBucket(rate_per_s=1.0, burst=1, now=10.0)
    assert b.take(10.0)
    assert not b.take(5.0) and not b.take(10.5)
    assert b.take(11.0)


def test_rate_refusal_names_the_quota_and_retry_after_is_seconds_until_a_token() -> None:
    q = TenantQuota(TenantPolicy(rate_per_s=4.0, burst=1))
    assert q.try_acquire(0.0) is None
    refusal = q.try_acquire(0.1)
    assert refusal is not None
    assert refusal.retry_after_s == pytest.approx(0.15)
    assert "rate quota" in refusal.message and "4 requests/s" in refusal.message
    assert q.try_acquire(0.25) is None


def test_burst_defaults_to_one_second_of_rate() -> None:
    q = TenantQuota(TenantPolicy(rate_per_s=3.0))
    assert [q.try_acquire(0.0) is None for _ in range(4)] == [True, True, True, False]


def test_concurrency_cap_holds_until_a_release_and_takes_no_token_when_refused() -> None:
    q = TenantQuota(TenantPolicy(max_concurrent=2, rate_per_s=100.0, burst=3))
    assert q.try_acquire(0.0) is None and q.try_acquire(0.0) is None
    refusal = q.try_acquire(0.0)
    assert refusal is not None and refusal.retry_after_s is None
    assert "concurrency quota" in refusal.message and "2 requests" in refusal.message
    q.release()
    assert q.try_acquire(0.0) is None  # the third token was still there
    assert q.in_flight == 2


def test_new_policy_keeps_saved_tokens_up_to_the_new_burst() -> None:
    q = TenantQuota(TenantPolicy(rate_per_s=1.0, burst=5))
    assert q.try_acquire(0.0) is None
    q.set_policy(TenantPolicy(rate_per_s=1.0, burst=1))
    assert q.try_acquire(0.0) is None and q.try_acquire(0.0) is not None
    q.set_policy(TenantPolicy())
    assert q.try_acquire(0.0) is None


def test_refusal_errors_map_to_429_and_503() -> None:
    assert Refuse("r", "quota", "m", 0.4).error().http_status == 429
    assert Refuse("r", "queue_full", "m").error().http_status == 429
    err = Refuse("r", "infeasible", "m", 2.0).error()
    assert err.http_status == 503 and err.retry_after_header() == "2"


def test_bad_policies_are_refused_with_what_to_fix() -> None:
    with pytest.raises(ValueError, match="weight"):
        TenantPolicy(weight=0)
    with pytest.raises(ValueError, match="rate_per_s"):
        TenantPolicy(rate_per_s=-1)
