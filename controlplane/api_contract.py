"""What the REST API promises at its edges: JSON bodies read strictly, and every status a
route answers declared in its OpenAPI (the schemathesis test holds the spec to the server)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class StrictBody(BaseModel):
    """A JSON request body: each field of its declared type (``true`` is not 1 second, "5"
    is not 5) and no field the route does not know (a typo would otherwise do nothing)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        # before extra="forbid" (which stays for the schema): say which fields there are
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data.keys() - cls.model_fields.keys())
            if unknown:
                raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                                 f"this body takes {', '.join(cls.model_fields)}")
        return data
