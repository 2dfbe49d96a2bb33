"""Differential conformance of the repository and statistics extensions: loads with
``config`` and ``file:`` overrides, unloads, the index before and after, and the counts
after N inferences, on real Triton and on ``inferplex worker`` alike.

Every model here has a name of its own, so the counts and states are this module's."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.conformance import (
    DIRECTORY_MODELS,
    assert_same_error_words,
    model_for,
    stable_rows,
)
from tests.support.models import simple_inputs
from tests.support.procs import LoopbackServer, wait_until

Servers = dict[str, LoopbackServer]


def _client(server: LoopbackServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


def _load_override(server: str, target: LoopbackServer, name: str, **config: Any) -> None:
    """A model that is not in the repository directory: config and file overrides."""
    artifact = model_for(server, "simple", name)
    with _client(target) as client:
        client.load_model(name, config=json.dumps(artifact.config | config), files=artifact.files())


def _settled_index(target: LoopbackServer) -> list[dict[str, Any]]:
    """The index once no row is mid-transition (Triton unloads in the background: a row
    reads UNLOADING for a moment after the unload call returns)."""
    with _client(target) as client:
        rows: list[dict[str, Any]] = []

        def settled() -> bool:
            rows[:] = client.get_model_repository_index()
            return all(row.get("state") != "UNLOADING" for row in rows)

        wait_until(settled, 20, "the repository index to settle")
        return rows


def test_load_with_overrides_serve_alike_and_the_index_lists_the_directory(triton_and_worker: Servers) -> None:
    name = "repo_override"
    for server, target in triton_and_worker.items():
        _load_override(server, target, name, max_batch_size=4)
    answers, refusals = {}, {}
    for server, target in triton_and_worker.items():
        with _client(target) as client:
            metadata = client.get_model_metadata(name)
            metadata.pop("platform")  # the model's form differs (see the HTTP suite)
            result = client.infer(name, simple_inputs(httpclient, np.ones((4, 16), np.int32)))
            try:
                client.infer(name, simple_inputs(httpclient, np.ones((5, 16), np.int32)))
                refusal = ""
            except InferenceServerException as exc:
                refusal = exc.message()
            answers[server] = (client.is_model_ready(name), metadata,
                               client.get_model_config(name)["max_batch_size"],
                               result.as_numpy("OUTPUT0").tolist())
            refusals[server] = refusal
    assert answers["worker"] == answers["triton"]
    assert answers["triton"][2] == 4 and "batch-size must be <= 4" in refusals["triton"]
    assert_same_error_words(refusals["triton"], refusals["worker"])

    indexes = {server: _settled_index(target) for server, target in triton_and_worker.items()}
    assert stable_rows(indexes["worker"]) == stable_rows(indexes["triton"])
    # Known divergence, deliberate: Triton's index lists only its repository directory, so a
    # model loaded with file: overrides is served and ready but missing from it. The worker
    # lists every model it has been asked for: the control plane loads everything with
    # overrides, and an index without them would not say what the worker serves.
    assert name not in {row["name"] for row in indexes["triton"]}
    assert {"name": name, "version": "1", "state": "READY"} in indexes["worker"]


def test_unload_then_index_and_unload_of_unknown_models(triton_and_worker: Servers) -> None:
    name = "repo_unloaded"
    answers = {}
    for server, target in triton_and_worker.items():
        _load_override(server, target, name)
        with _client(target) as client:
            client.unload_model(name)
            wait_until(lambda c=client: not c.is_model_ready(name), 20, f"{name} to unload")
            client.unload_model(name)  # again: nothing loaded, still a success
            client.unload_model("never_heard_of")  # Triton answers success for any name
            # a directory model, unloaded and loaded back
            client.unload_model("simple_string")
            after_unload = stable_rows(_settled_index(target))
            client.load_model("simple_string")
            answers[server] = (after_unload, stable_rows(_settled_index(target)),
                               [client.is_model_ready(m) for m in (name, *DIRECTORY_MODELS)])
    assert answers["worker"] == answers["triton"]
    assert {"name": "simple_string", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in answers["triton"][0]


def test_load_errors_start_with_tritons_words(triton_and_worker: Servers) -> None:
    messages = {}
    for server, target in triton_and_worker.items():
        with _client(target) as client:
            try:
                client.load_model("not_in_repository")
            except InferenceServerException as exc:
                messages[server] = (exc.status(), exc.message())
    # Deliberate: Triton answers 500 "failed to load 'x', failed to poll from model
    # repository"; the worker 404 saying no such model is in its repository directory (the
    # client named a model that is not there: not a server fault to retry).
    assert messages["triton"][0] == "500" and messages["worker"][0] == "404", messages
    for _, message in messages.values():
        assert message.startswith("failed to load 'not_in_repository'")


# Counters a client reads; the times (ns, last_inference) differ by nature and are
# held only to being set. memory_usage: Triton's Python backend reports none; the worker
# reports the bytes it charged the model to its memory budget (deliberate: the control
# plane places by it).
COUNTS = ("inference_count", "execution_count")
PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


def _counts(entry: dict[str, Any]) -> dict[str, Any]:
    stats = entry["inference_stats"]
    return {
        "keys": sorted(entry), "name": entry["name"], "version": entry["version"],
        **{k: entry[k] for k in COUNTS},
        **{p: stats[p]["count"] for p in PHASES},
        "timed": [p for p in PHASES if stats[p]["ns"] > 0],
        "batches": [(b["batch_size"], b["compute_infer"]["count"]) for b in entry["batch_stats"]],
        "response_stats": entry["response_stats"],
        "last_inference_set": entry["last_inference"] > 0,
    }


def _statistics_after(client: httpclient.InferenceServerClient, name: str, executions: int) -> dict[str, Any]:
    """The model's statistics entry once it shows ``executions``: Triton records an
    execution's statistics after its response is sent, so a read right after the last
    answer can see a count mid-update."""
    entries: list[dict[str, Any]] = []

    def counted() -> bool:
        entries[:] = client.get_inference_statistics(name)["model_stats"]
        stats = entries[0]["inference_stats"]
        return entries[0]["execution_count"] >= executions and stats["compute_output"]["count"] >= executions

    wait_until(counted, 10, f"statistics of {executions} executions of {name}")
    return entries[0]


def test_statistics_after_n_inferences_count_alike(triton_and_worker: Servers) -> None:
    name = "repo_counted"
    answers = {}
    for server, target in triton_and_worker.items():
        _load_override(server, target, name)
        with _client(target) as client:
            for batch in (1, 2, 2, 3):
                client.infer(name, simple_inputs(httpclient, np.ones((batch, 16), np.int32)))
            try:  # refused by the checks before it reaches the model: not counted
                client.infer(name, simple_inputs(httpclient, np.ones((9, 16), np.int32)))
            except InferenceServerException:
                pass
            entry = _statistics_after(client, name, executions=4)
            every = [e["name"] for e in client.get_inference_statistics()["model_stats"]]
            answers[server] = (_counts(entry), name in every)
    assert answers["worker"] == answers["triton"]
    counted = answers["triton"][0]
    assert (counted["inference_count"], counted["execution_count"], counted["fail"]) == (8, 4, 0)
