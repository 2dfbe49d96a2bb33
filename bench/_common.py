"""Small helpers every benchmark uses."""

from __future__ import annotations

from typing import Any

import numpy as np


def pct(samples: list[float], q: float) -> float:
    """The q-th percentile of samples, as a plain float."""
    return float(np.percentile(np.asarray(samples), q))


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (writes files, needs no display); imported
    only when a report is drawn, since matplotlib is slow to import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
