"""HTTP body compression for the v2 endpoints (Content-Encoding / Accept-Encoding).

tritonclient sends ``deflate`` as zlib-wrapped data (``zlib.compress``) and
decompresses responses with ``zlib.decompress``; other clients send raw deflate
streams, so both are accepted on the way in and zlib is sent on the way out.
Decompression is incremental and stops one byte past the limit, so a small zip
bomb cannot allocate more than ``limit`` bytes.
"""

from __future__ import annotations

import zlib

from kserve.errors import InvalidArgument, PayloadTooLarge

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS
_CHUNK = 1 << 20
# Level 1 costs a fraction of the default's CPU for most of its ratio on tensor data;
# the response path is latency-sensitive.
_LEVEL = 1


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, identity; a comma list is applied in
    reverse). Raises PayloadTooLarge past ``limit`` bytes, InvalidArgument on corrupt
    data or an unknown encoding."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    data = body
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            data = _inflate(data, _GZIP_WBITS, limit, "gzip", multi_member=True)
        elif coding == "deflate":
            data = _inflate(
                data, _ZLIB_WBITS if _looks_like_zlib(data) else _RAW_WBITS, limit, "deflate"
            )
        else:
            raise InvalidArgument(
                f"unsupported Content-Encoding {coding!r}; send gzip, deflate or identity"
            )
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is {len(data)} bytes, over the limit of {limit} bytes")
    return data


def _looks_like_zlib(data: bytes) -> bool:
    # RFC 1950 header: CM=8 (deflate) in the low nibble and a header checksum divisible by 31.
    return len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0


def _inflate(data: bytes, wbits: int, limit: int, name: str, multi_member: bool = False) -> bytes:
    out: list[bytes] = []
    produced = 0
    pending = data
    while True:
        d = zlib.decompressobj(wbits)
        try:
            while pending:
                chunk = d.decompress(pending, min(_CHUNK, limit + 1 - produced))
                produced += len(chunk)
                out.append(chunk)
                if produced > limit:
                    raise PayloadTooLarge(
                        f"{name}-compressed request body inflates past the limit of {limit} bytes"
                    )
                if d.eof:
                    break
                pending = d.unconsumed_tail
                if not chunk and not pending:
                    break
            tail = d.flush()
        except zlib.error as exc:
            raise InvalidArgument(
                f"request body is not valid {name} data ({exc}); check Content-Encoding"
            ) from None
        produced += len(tail)
        out.append(tail)
        if produced > limit:
            raise PayloadTooLarge(
                f"{name}-compressed request body inflates past the limit of {limit} bytes"
            )
        if not d.eof:
            raise InvalidArgument(
                f"request body is truncated {name} data; send the whole compressed body"
            )
        pending = d.unused_data
        if not pending:
            break
        if not multi_member:
            raise InvalidArgument(
                f"request body has {len(pending)} bytes after the end of its {name} stream"
            )
    return b"".join(out)


def _accepted(accept_encoding: str) -> dict[str, float]:
    accepted: dict[str, float] = {}
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        token = token.strip().lower()
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if token:
            accepted[token] = q
    return accepted


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """Compress with gzip or deflate (zlib-wrapped) if the client accepts one; else
    return the body unchanged and None (identity)."""
    if not accept_encoding:
        return body, None
    accepted = _accepted(accept_encoding)
    star = accepted.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for coding in ("gzip", "deflate"):
        q = accepted.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if best == "gzip":
        c = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        return c.compress(body) + c.flush(), "gzip"
    if best == "deflate":
        return zlib.compress(body, _LEVEL), "deflate"
    return body, None
