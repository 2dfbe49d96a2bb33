"""Receiving a model upload: the request body streamed to the artifact store's temp area.

Two request forms carry the same thing: ``multipart/form-data`` (the model in the
``file`` part, options as form fields) and a raw body (``application/octet-stream``,
options as query parameters). Either way the bytes go to disk chunk by chunk while
being hashed, and reading stops as soon as the size limit is passed; the model is
never whole in memory here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from controlplane.artifacts import ArtifactStore, StagedUpload, too_large
from kserve.errors import InvalidArgument

FILE_FIELD = "file"
# a Triton config may come as a file too (curl -F config=@config.pbtxt); it is read as text
CONFIG_FIELD = "config"
# form fields are JSON specs and numbers; anything bigger is a mistake
MAX_FIELD_BYTES = 256 * 1024
# the file and a handful of options; together with MAX_FIELD_BYTES this bounds what a
# form holds in memory (the file goes to disk) however the body is framed
MAX_PARTS = 32
# a part's headers are a Content-Disposition and maybe a Content-Type
MAX_PART_HEADER_BYTES = 8 * 1024
# multipart framing and form fields on top of the file itself
_MULTIPART_OVERHEAD = 1024 * 1024


@dataclass
class ReceivedUpload:
    staged: StagedUpload
    fields: dict[str, str] = field(default_factory=dict)


async def receive_upload(request: Request, artifacts: ArtifactStore, max_bytes: int) -> ReceivedUpload:
    declared = request.headers.get("content-length")
    content_type, params = parse_options_header(request.headers.get("content-type"))
    multipart = content_type == b"multipart/form-data"
    if declared is not None and declared.isdigit():
        # refuse before reading a byte when the client says how big it is
        if int(declared) > max_bytes + (_MULTIPART_OVERHEAD if multipart else 0):
            raise too_large(max_bytes)
    if not multipart:
        return ReceivedUpload(await artifacts.stage(request.stream(), max_bytes))
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidArgument("multipart upload without a boundary in its Content-Type")
    form = _MultipartForm(boundary)
    staged = await artifacts.stage(form.file_chunks(request.stream()), max_bytes)
    try:
        form.check_complete()
    except BaseException:
        artifacts.discard(staged)
        raise
    return ReceivedUpload(staged, form.fields)


class _MultipartForm:
    """Drives python-multipart's push parser from the request stream, handing the
    ``file`` part's bytes onward and keeping the (small) other fields."""

    def __init__(self, boundary: bytes) -> None:
        self.fields: dict[str, str] = {}
        self._file_parts = 0
        self._parts = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._part: str | None = None
        self._is_file = False
        self._value = bytearray()
        self._pending: list[bytes] = []
        self._ended = False
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })

    async def file_chunks(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in body:
            try:
                self._parser.write(chunk)
            except InvalidArgument:
                raise
            except Exception as exc:  # python-multipart's own parse errors
                raise InvalidArgument(f"malformed multipart body: {exc}") from None
            pending, self._pending = self._pending, []
            for piece in pending:
                yield piece
        self._parser.finalize()

    def check_complete(self) -> None:
        if not self._ended:
            raise InvalidArgument("multipart body ended early: the upload was cut off")
        if self._file_parts == 0:
            raise InvalidArgument(f"multipart upload without a '{FILE_FIELD}' part: send the model file "
                                  f"as the '{FILE_FIELD}' field")

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidArgument(f"multipart upload has more than {MAX_PARTS} parts: send the "
                                  f"'{FILE_FIELD}' part and only the options you set")
        self._headers = {}
        self._header_bytes = 0
        self._part = None
        self._is_file = False
        self._value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise InvalidArgument(f"a multipart part's headers are over {MAX_PART_HEADER_BYTES} bytes")

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get(b"content-disposition"))
        name = disposition.get(b"name", b"").decode(errors="replace")
        self._part = name
        if name == FILE_FIELD:
            self._file_parts += 1
            if self._file_parts > 1:
                raise InvalidArgument(f"more than one '{FILE_FIELD}' part: upload one model file per request")
            self._is_file = True
        elif b"filename" in disposition and name != CONFIG_FIELD:
            raise InvalidArgument(f"unexpected file in form field {name!r}: send the model as the "
                                  f"'{FILE_FIELD}' field (and a Triton config as '{CONFIG_FIELD}')")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self._pending.append(bytes(data[start:end]))
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise InvalidArgument(f"form field {self._part!r} is over {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if not self._is_file and self._part:
            if self._part in self.fields:  # which one was meant is a guess: refuse, don't pick
                raise InvalidArgument(f"form field {self._part!r} is given twice: send it once")
            self.fields[self._part] = self._value.decode(errors="replace")

    def _end(self) -> None:
        self._ended = True
