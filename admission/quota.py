"""Per-tenant quotas: a token-bucket request rate and a cap on concurrent requests.

Pure: every call takes ``now`` from the caller's clock. A refused request takes no
token; an admitted one takes one and holds a concurrency place until it is answered
(completed, dropped or cancelled), which the scheduler reports through ``release``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from admission.model import TenantPolicy


@dataclass(frozen=True)
class QuotaRefusal:
    message: str  # names the quota, says nothing internal
    retry_after_s: float | None  # seconds until a token; None for the concurrency cap


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; starts full."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        # a clock that steps back (another replica's skew, a test) must not mint tokens
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now

    def tokens(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def seconds_until_token(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self.rate_per_s)

    def take(self, now: float) -> bool:
        self._refill(now)
        # a hair of tolerance so a token due exactly now (float sums) is available now
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def reshape(self, rate_per_s: float, burst: int) -> None:
        """New limits from the admin; the tokens saved so far are kept, up to the new burst
        (time since the last refill accrues at the new rate)."""
        self.rate_per_s, self.burst = rate_per_s, burst
        self._tokens = min(self._tokens, float(burst))


def _burst(policy: TenantPolicy) -> int:
    assert policy.rate_per_s is not None
    return policy.burst if policy.burst is not None else max(1, math.ceil(policy.rate_per_s))


class TenantQuota:
    """One tenant's rate and concurrency quotas, shaped by its TenantPolicy."""

    def __init__(self, policy: TenantPolicy) -> None:
        self.policy = policy
        self.in_flight = 0
        self._bucket: TokenBucket | None = None  # made, full, at the first request

    def set_policy(self, policy: TenantPolicy) -> None:
        self.policy = policy
        if policy.rate_per_s is None:
            self._bucket = None
        elif self._bucket is not None:
            self._bucket.reshape(policy.rate_per_s, _burst(policy))

    def try_acquire(self, now: float) -> QuotaRefusal | None:
        """Take a token and a concurrency place, or say which quota refuses and when to retry."""
        policy = self.policy
        if policy.max_concurrent is None and policy.rate_per_s is None:  # no quota set
            self.in_flight += 1
            return None
        refusal = self.check(now)
        if refusal is not None:
            return refusal
        if self._bucket is not None:
            self._bucket.take(now)
        self.in_flight += 1
        return None

    def check(self, now: float) -> QuotaRefusal | None:
        """What ``try_acquire`` would refuse now, taking nothing: a tenant over its quota is
        answered before its request is read any further."""
        cap = self.policy.max_concurrent
        if cap is not None and self.in_flight >= cap:
            return QuotaRefusal(
                f"concurrency quota exceeded: at most {cap} requests in flight at once", None)
        if self._bucket is None and self.policy.rate_per_s is not None:
            self._bucket = TokenBucket(self.policy.rate_per_s, _burst(self.policy), now)
        bucket = self._bucket
        if bucket is not None and bucket.tokens(now) < 1.0 - 1e-9:
            return QuotaRefusal(
                f"rate quota exceeded: {bucket.rate_per_s:g} requests/s with bursts of {bucket.burst}",
                bucket.seconds_until_token(now))
        return None

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
