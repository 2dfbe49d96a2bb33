"""What a prediction says about a deadline, in the words the tenant reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

from admission.model import PendingRequest, ms

_SHOWN_S = 0.0005  # what rounds to at least 1 ms in a message


@dataclass(frozen=True)
class Prediction:
    """Predicted seconds from now to completion of a new interactive request."""

    queue_s: float
    load_s: float
    exec_s: float
    known: bool  # False: nothing measured yet, never a reason to refuse
    # what admission adds for what it cannot see (admission.calibration: the recent
    # prediction error, and the control plane's own delay before and after the core)
    margin_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.queue_s + self.load_s + self.exec_s + self.margin_s


def infeasible(req: PendingRequest, queue_s: float, load_s: float, exec_s: float, margin_s: float,
               now: float) -> tuple[str, float | None]:
    """The refusal's message, with the predicted breakdown (a ``Prediction``'s parts: the
    admission path refuses without building one), and its Retry-After."""
    assert req.deadline_s is not None
    budget = req.deadline_s - req.arrival_s
    waited = max(0.0, now - req.arrival_s)
    tightened = req.slo_s is not None and budget < req.slo_s - 1e-9
    what = "deadline the client set" if tightened else "SLO"
    loading = min(max(0.0, req.loading_s), waited)  # a cold load this request waited for
    load = loading + load_s
    parts = f"queue {round((waited - loading + queue_s) * 1000)} ms"
    if load >= _SHOWN_S:
        parts += f", load {ms(load)} ms"
    parts += f", execute {round(exec_s * 1000)} ms"
    if margin_s >= _SHOWN_S:
        parts += f", margin {ms(margin_s)} ms for recent prediction error and control-plane delay"
    total = waited + (queue_s + load_s + exec_s + margin_s)  # as Prediction.total_s
    message = (f"cannot meet the {round(budget * 1000)} ms {what} of model '{req.display_name}': "
               f"predicted {round(total * 1000)} ms ({parts})")
    loaded_now = loading >= _SHOWN_S and load_s == 0
    if loaded_now:
        message += "; the model is loaded now, a retry does not wait for the load"
    # a retry can succeed once the queue drains (or the load is done), unless the work
    # alone is too long
    retry: float | None = None
    if load_s + exec_s + margin_s <= budget:
        if queue_s > 0:
            retry = queue_s
        elif loaded_now:
            retry = 0.0
    return message, retry


def overcommitted(req: PendingRequest, busy_until_s: float, now: float) -> tuple[str, float]:
    """The refusal of a request that fits only by making requests admitted before it late;
    a retry can succeed once that work is done."""
    assert req.deadline_s is not None
    wait = max(0.0, busy_until_s - now)
    return (f"cannot meet the {ms(req.deadline_s - req.arrival_s)} ms SLO of model "
            f"'{req.display_name}' without delaying requests admitted before it past theirs: "
            f"the instance time it needs is committed for the next {ms(wait)} ms", wait)


def missed(req: PendingRequest, late_by_s: float) -> str:
    """A drop's message: by how much the request would have been late (at least 1 ms)."""
    late = max(1, math.ceil(late_by_s * 1000))
    return (f"model '{req.display_name}': dropped before it ran, the request would have missed "
            f"its deadline by {late} ms")
