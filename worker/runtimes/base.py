"""What the executor needs from a runtime, split into the three phases Triton's
statistics time separately (compute_input, compute_infer, compute_output)."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Runtime(abc.ABC):
    @abc.abstractmethod
    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        """Turn request arrays into the runtime's own input form (compute_input)."""

    @abc.abstractmethod
    def infer(self, prepared: Any, output_names: list[str], deadline_ns: int | None = None) -> Any:
        """Run the model (compute_infer); a runtime that can stop at ``deadline_ns``
        (time.monotonic_ns) does."""

    @abc.abstractmethod
    def collect(self, raw: Any, output_names: list[str]) -> dict[str, np.ndarray]:
        """Turn the runtime's outputs into numpy arrays by name (compute_output)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the runtime holds beyond Python references."""

    def run(self, inputs: dict[str, np.ndarray], output_names: list[str],
            deadline_ns: int | None = None) -> dict[str, np.ndarray]:
        return self.collect(self.infer(self.prepare(inputs), output_names, deadline_ns), output_names)
