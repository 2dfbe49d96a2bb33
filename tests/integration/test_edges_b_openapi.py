"""What the OpenAPI spec says about statuses, bodies and methods, checked against the app's
answers directly (the schemathesis test, test_openapi_schemathesis.py, samples the rest)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.cp_app import ADMIN_KEY, RunningApp

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
async def spec(cp: RunningApp) -> dict[str, Any]:
    r = await cp.client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


async def test_a_method_a_path_does_not_serve_gets_405_allowing_every_method_the_spec_gives_it(
        cp: RunningApp, spec: dict[str, Any]) -> None:
    # Starlette named only the first route's methods: OPTIONS /v1/models said "Allow: POST"
    for path, operations in spec["paths"].items():
        concrete = path.replace("{", "").replace("}", "")  # /v1/models/{name} -> /v1/models/name
        declared = sorted(m.upper() for m in operations if m in HTTP_METHODS)
        r = await cp.client.request("OPTIONS", concrete, headers=cp.headers(ADMIN_KEY))
        assert r.status_code == 405, (path, r.status_code, r.text)
        assert r.headers["allow"] == ", ".join(declared), path
        assert r.json()["error"].startswith("method OPTIONS is not allowed here; use "), r.text
    r = await cp.client.put("/admin/tenants/acme", headers=cp.headers(ADMIN_KEY))
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PATCH"
    assert r.json() == {"error": "method PUT is not allowed here; use DELETE, GET or PATCH"}
    # the literal route, not the /admin/instances/{instance_id} one beside it
    r = await cp.client.get("/admin/instances/register", headers=cp.headers(ADMIN_KEY))
    assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_every_refusal_the_app_answers_is_declared_as_the_error_body_not_fastapis_422(
        spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            responses = op["responses"]
            assert "422" not in responses, (method, path)  # bad input answers 400 here
            if op.get("security"):
                assert {"401", "403"} <= responses.keys(), (method, path)
            if op.get("requestBody"):
                assert "400" in responses, (method, path)
            for code, answer in responses.items():
                if code.startswith(("4", "5")) and answer.get("content"):
                    assert answer["content"] == {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorBody"}}}, (method, path, code)


async def test_health_endpoints_are_declared_and_answer_with_an_empty_body(
        cp: RunningApp, spec: dict[str, Any]) -> None:
    live = spec["paths"]["/v2/health/live"]["get"]["responses"]
    ready = spec["paths"]["/v2/health/ready"]["get"]["responses"]
    assert not live["200"].get("content") and not ready["200"].get("content")
    assert not ready["503"].get("content")  # was declared JSON: the answer has no body
    r = await cp.client.get("/v2/health/live")
    assert r.status_code == 200 and r.content == b""
    r = await cp.client.get("/v2/health/ready")  # no instances in this app
    assert r.status_code == 503 and r.content == b""


async def test_the_model_record_a_tenant_gets_is_what_the_spec_declares(
        cp: RunningApp, spec: dict[str, Any]) -> None:
    # the spec required qualified_name, which the answers (rightly) leave out
    version = spec["components"]["schemas"]["ModelVersion"]
    assert "qualified_name" not in version["properties"]
    assert "qualified_name" not in version["required"]
    assert spec["paths"]["/v1/models"]["post"]["responses"]["201"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/ModelVersion"}
