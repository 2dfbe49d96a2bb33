"""Who is calling: the principal an API key resolves to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "tenant"]


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    # None for operators (admin keys are not bound to a tenant)
    tenant: str | None
    key_id: str
