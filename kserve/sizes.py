"""Sizes in bytes as people write them (``2GiB``, ``512MiB``, ``8G``): command-line
flags of the worker and of ``inferplex up`` read them the same way."""

from __future__ import annotations

import argparse
import re

from kserve.errors import InvalidArgument

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
    "ti": 2**40, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int) -> int:
    """``"2GiB"`` -> 2147483648; plain ints pass through. K/M/G/T (and KB/MB/..) are
    powers of 1000, Ki/Mi/Gi/Ti (and KiB/MiB/..) powers of 1024."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InvalidArgument(
            f"cannot read {text!r} as a size in bytes; write e.g. 2147483648, 2GiB, 512MiB or 8G"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def size_arg(text: str) -> int:
    """``parse_bytes`` as an argparse ``type=``: a bad size is a usage error, not a traceback."""
    try:
        return parse_bytes(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
