"""JSON a client sent, with its nesting bounded before it is parsed.

``json.loads`` recurses in C once per level and raises RecursionError near the
interpreter's recursion limit, which depends on how deep the caller's stack already
is: uncaught, a 500. An explicit bound checked first refuses the same bodies with the
same 400 everywhere, and keeps what is parsed shallow enough for every later walk
(numpy, json.dumps, pydantic).
"""

from __future__ import annotations

from kserve.errors import InvalidArgument

# A 64-dimension tensor's `data`, inside a request's `inputs` list, with room to spare;
# parameters are flat values.
MAX_JSON_DEPTH = 80

# In JSON a backslash only escapes the next character of a string; once escaped
# backslashes, then escaped quotes, are gone, a string runs from one quote to the next.
# (Where the text stops being valid JSON this reading may go wrong, but json.loads stops
# there too, before any deeper level.)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPEN = frozenset(b"[{")


def _structure(text: bytes) -> bytes:
    """The brackets of ``text`` outside its strings, in order."""
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(text.split(b'"')[0::2]).translate(None, _NOT_BRACKETS)


def nesting_exceeds(text: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON in ``text`` nests deeper than ``limit`` arrays and objects."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False  # the common case, at the speed of two byte counts
    depth = 0
    for c in _structure(text):
        if c in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def check_nesting(text: bytes, what: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse ``text`` with a 400 when it nests deeper than ``limit``."""
    if nesting_exceeds(text, limit):
        raise InvalidArgument(
            f"the {what} JSON nests arrays and objects more than {limit} levels deep; "
            f"a tensor's 'data' has at most 64 levels and parameters are flat values"
        )

