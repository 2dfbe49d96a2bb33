"""JSON a client sent, with its size and nesting bounded before it is parsed.

``json.loads`` recurses in C once per level and raises RecursionError near the
interpreter's recursion limit, which depends on how deep the caller's stack already
is: uncaught, a 500. An explicit bound checked first refuses the same bodies with the
same 400 everywhere, and keeps what is parsed shallow enough for every later walk
(numpy, json.dumps, pydantic). A bound on the number of values, counted in the text,
bounds what the parsed objects take, which a bound on the text's bytes does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kserve.errors import InvalidArgument, PayloadTooLarge

# A 64-dimension tensor's `data`, inside a request's `inputs` list, with room to spare;
# parameters are flat values.
MAX_JSON_DEPTH = 80
# A 1024 x 1024 tensor as JSON `data`. Parsed, JSON takes up to ~30 times its text (`[],`
# repeated: 3 bytes of text, a 56-byte list and its 8-byte slot), but at most ~150 bytes
# per value counted here; binary tensor data has no such cost and no such bound.
MAX_JSON_VALUES = 2**20

# In JSON a backslash only escapes the next character of a string; once escaped
# backslashes, then escaped quotes, are gone, a string runs from one quote to the next.
# (Where the text stops being valid JSON this reading may go wrong, but json.loads stops
# there too, before any deeper level.)
_ALL = bytes(range(256))
_NOT_BRACKETS = bytes(sorted(set(_ALL) - set(b"[]{}")))
# every value but the top-level one follows one of these (an empty array or object counts one)
_VALUE_MARKS = b",:[{"
_NOT_VALUE_MARKS = bytes(sorted(set(_ALL) - set(_VALUE_MARKS)))
_OPEN = frozenset(b"[{")
# text is scanned this much at a time, so no scan holds more than a window's pieces
_WINDOW = 1 << 16


def _outside_strings(text: bytes, delete: bytes) -> Iterator[bytes]:
    """The characters of ``text`` outside its strings, less those in ``delete``, in order,
    a window at a time."""
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    inside = False
    for at in range(0, len(text), _WINDOW):
        pieces = text[at:at + _WINDOW].split(b'"')
        yield b"".join(pieces[1::2] if inside else pieces[0::2]).translate(None, delete)
        inside ^= len(pieces) % 2 == 0


def nesting_exceeds(text: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON in ``text`` nests deeper than ``limit`` arrays and objects."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False  # the common case, at the speed of two byte counts
    depth = 0
    for part in _outside_strings(text, _NOT_BRACKETS):
        for c in part:
            if c in _OPEN:
                depth += 1
                if depth > limit:
                    return True
            else:
                depth -= 1
    return False


def values_exceed(text: bytes, limit: int = MAX_JSON_VALUES) -> bool:
    """Whether the JSON in ``text`` holds more than ``limit`` values (array elements, object
    keys and values), counted from the characters that precede them outside strings."""
    if len(text) <= limit:
        return False  # every value takes at least one character
    marks = sum(len(text[at:at + _WINDOW].translate(None, _NOT_VALUE_MARKS))
                for at in range(0, len(text), _WINDOW))
    if marks <= limit:
        return False  # strings' own commas and colons counted too: still within
    return sum(len(part) for part in _outside_strings(text, _NOT_VALUE_MARKS)) > limit


def check_nesting(text: bytes, what: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse ``text`` with a 400 when it nests deeper than ``limit``."""
    if nesting_exceeds(text, limit):
        raise InvalidArgument(
            f"the {what} JSON nests arrays and objects more than {limit} levels deep; "
            f"a tensor's 'data' has at most 64 levels and parameters are flat values"
        )


def check_json(text: bytes, what: str, max_values: int, setting: str) -> None:
    """Refuse ``text`` before it is parsed: 413 when it holds more than ``max_values``
    values (the bound ``setting`` names), 400 when it nests too deep. The count comes first:
    it bounds the nesting walk's work too."""
    if values_exceed(text, max_values):
        raise PayloadTooLarge(
            f"the {what} JSON holds more than {max_values} values (array elements and object "
            f"members; {setting}); send large tensors as binary tensor data (tritonclient's "
            "binary_data=True, its default), which has no such bound"
        )
    check_nesting(text, what)


@dataclass(frozen=True, slots=True)
class JsonBound:
    """A server's bound on the JSON it parses, and the setting that configures it."""

    max_values: int = MAX_JSON_VALUES
    setting: str = "the server's JSON value limit"

    def check(self, text: bytes, what: str) -> None:
        check_json(text, what, self.max_values, self.setting)


DEFAULT_JSON_BOUND = JsonBound()
