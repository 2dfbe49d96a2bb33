"""A model's files by content: the digest the control plane and the worker's artifact cache
agree on, and the load parameter that names it.

A repository load to an ``inferplex worker`` may carry, instead of its ``file:`` parameters,
the string parameter ``inferplex_artifact_sha256`` (the digest below). A worker that holds a
verified copy of exactly those files in its local cache loads them; one that does not
answers NOT_FOUND (HTTP 404) with a message starting "artifact not in the worker's cache",
and the caller sends the load again with the files. NVIDIA Triton knows no such parameter,
so it is only ever sent to inferplex workers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

ARTIFACT_PARAMETER = "inferplex_artifact_sha256"
NOT_CACHED = "artifact not in the worker's cache"
# the servers, by the name their metadata gives, that know the parameter
CACHING_SERVERS = frozenset({"inferplex-worker"})
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


def tree_digest(entries: Iterable[tuple[str, int, Iterable[bytes]]]) -> str:
    """sha256 over ``(path, size, chunks)`` in the order given (callers sort by path): each
    file framed by its path's and its content's lengths, so no two trees share a digest by
    moving bytes between a name and a content."""
    h = hashlib.sha256()
    for path, size, chunks in entries:
        encoded = path.encode()
        h.update(len(encoded).to_bytes(8, "big"))
        h.update(encoded)
        h.update(size.to_bytes(8, "big"))
        for chunk in chunks:
            h.update(chunk)
    return h.hexdigest()


def files_digest(files: Mapping[str, bytes]) -> str:
    """The digest of a model's files keyed ``"<version>/<filename>"`` (no ``file:`` prefix)."""
    return tree_digest((path, len(data), (data,)) for path, data in sorted(files.items()))
