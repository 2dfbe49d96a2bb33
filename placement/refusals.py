"""Why a model that requests wait for cannot be placed, and what to do about it (issue 12).

Two texts per refusal: the operator's names instances and models; the tenant's names neither
an instance nor another tenant, and says what the tenant can do.
"""

from __future__ import annotations

from placement.cluster import ClusterSnapshot, ModelSpec, Refusal
from placement.victims import Blocked, SharesLedger, mb, num

_RETRY = "retry later"


def refusal(snap: ClusterSnapshot, spec: ModelSpec, ledger: SharesLedger, blocked: Blocked,
            rate_per_s: float = 0.0) -> Refusal:
    healthy = [v for v in snap.instances if v.healthy]
    if not snap.instances:
        return Refusal(spec.name, "no inference instances are registered; start workers (inferplex up "
                       "--workers N) or POST /admin/instances",
                       f"no inference capacity is available; {_RETRY}")
    if not healthy:
        return Refusal(spec.name, f"none of the {len(snap.instances)} inference instances is healthy; "
                       "check their health and restart them", f"no inference capacity is available; {_RETRY}")
    serving = [v for v in healthy if v.serves(spec.platform)]
    if not serving:
        return Refusal(spec.name, f"none of the {len(healthy)} healthy inference instances can run "
                       f"{spec.platform} models (their servers lack its backend); add an instance that has it",
                       f"no inference instance can run {spec.platform} models now; {_RETRY}")
    profiled = [v for v in serving if v.instance_class in spec.costs]
    failure = spec.load_failure
    if profiled and failure is not None and all(failure.blocks(v.instance_id, snap.now) for v in profiled):
        wait = f"{failure.retry_at - snap.now:.0f} s"
        where = f" on {failure.instance_id}" if failure.instance_id else ""
        return Refusal(spec.name, f"the last load of {spec.label}{where} failed ({failure.reason}); "
                       f"attempt {failure.attempts + 1} in {wait}; fix the cause shown on the model's status",
                       f"the model failed to load; it is tried again in {wait}")
    if not profiled:
        classes = ", ".join(sorted({v.instance_class for v in serving}))
        return Refusal(spec.name, f"{spec.label} has no profile for any healthy instance's class "
                       f"({classes}); profile it on one (uploads are profiled on the first instance "
                       "that takes them) or add an instance of a profiled class",
                       f"the model has not been profiled on the available instances yet; {_RETRY}")
    need = min(spec.costs[v.instance_class].memory_bytes for v in profiled)
    largest = max(v.budget_bytes for v in profiled)
    if need > largest:
        return Refusal(spec.name, f"{spec.label} needs {mb(need)}, more than any instance's whole "
                       f"budget (largest {mb(largest)}); add a larger instance or raise a budget",
                       f"the model needs {mb(need)} of memory, more than any inference instance has")
    why = []
    if blocked.busy:
        why.append(f"{blocked.busy} resident cop{'y is' if blocked.busy == 1 else 'ies are'} busy "
                   "(work in flight, queued work that can meet its deadline, or loading)")
    if blocked.protected:
        why.append(f"{blocked.protected} belong{'s' if blocked.protected == 1 else ''} to tenants "
                   "within their memory shares")
    if blocked.dearer:
        why.append(f"on {blocked.dearer} instance{'s' if blocked.dearer > 1 else ''} the copies that "
                   f"could go are in heavier use than {spec.label} ({num(rate_per_s)} req/s), so "
                   "evicting them would cost more than it gains")
    over = ledger.over_share(spec.tenant, need)
    share = ledger.share_of(spec.tenant)
    operator = (f"no instance can make room for {spec.label} ({mb(need)}): at most "
                f"{mb(blocked.freeable)} can be freed on one instance"
                + (f"; {' and '.join(why)}" if why else "")
                + "; retry when work drains, "
                + (f"raise tenant {spec.tenant}'s memory share ({mb(share or 0)}), " if over else "")
                + "or add an instance")
    if over:
        tenant = (f"the model cannot be loaded: your models already use {mb(ledger.usage.get(spec.tenant, 0))}"
                  f" of memory and this one would take you over your memory share ({mb(share or 0)}); "
                  "unload or delete a model you no longer need, or ask the operator for a larger share")
    elif blocked.dearer and share is None:
        tenant = ("the model cannot be loaded now: the shared memory is held by models in heavier use; "
                  f"{_RETRY}, or ask the operator for a memory share")
    else:
        tenant = ("the model cannot be loaded now: the memory is held by models in use or reserved by "
                  f"memory shares; {_RETRY}")
    return Refusal(spec.name, operator, tenant)
