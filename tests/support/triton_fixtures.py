"""pytest fixtures for real NVIDIA Triton (registered in tests/conftest.py via pytest_plugins).

``triton_and_worker``: both servers for the differential suites (session-wide).
``make_triton``: a factory for servers private to one test (stopped after it, however it
ends). Modules that share one server among their tests use ``run_triton`` in a
module-scoped fixture of their own, after ``require_triton()``. Both skip, with the
reason, only where Triton cannot be had (see scripts/ensure-triton).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.procs import LoopbackServer
from tests.support.triton import TritonServer, run_triton, triton_unavailable


def require_triton() -> None:
    """Skip the calling test or fixture where real Triton cannot run here."""
    reason = triton_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def make_triton(tmp_path: Path) -> Iterator[Callable[..., TritonServer]]:
    """``make_triton(repository=None, *extra_args)``: a started server (an empty repository
    under tmp_path by default)."""
    require_triton()
    started: list[TritonServer] = []
    with ExitStack() as stack:
        def make(repository: Path | None = None, *extra_args: str) -> TritonServer:
            repo = repository or tmp_path / f"triton-repo-{len(started)}"
            started.append(stack.enter_context(run_triton(repo, tmp_path, *extra_args)))
            return started[-1]

        yield make


@pytest.fixture(scope="session")
def triton_and_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LoopbackServer]]:
    """Real Triton and an ``inferplex worker`` serving the same ``simple`` and
    ``simple_string`` (tests/support/conformance.py), shared by the conformance modules:
    tests that load, unload or count use models of their own names."""
    require_triton()
    from tests.support.conformance import serving_pair  # imports the worker's test models

    with serving_pair(tmp_path_factory.mktemp("conformance")) as servers:
        yield servers
