"""A request's body in any of the encodings clients send (JSON, urlencoded, multipart), read with the key checked
first and within the server's size limits: nothing a caller without the key sends is written anywhere, and an
accepted upload goes to its temporary file once, as it arrives.

The key in the Authorization header opens the body at once. Without it the key may come in the body as `ai_token`
(the reference's rule): then the body is read into memory only, and whatever would need more than `max_request`
bytes, or a multipart body's file part before an `ai_token` field carrying the key, is refused with 401, not 413
(the caller is unknown, what it sends is not looked at).
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .protocol import ProtocolError

UPLOAD_FIELDS = {"src_audio": ("ctx_audio", "src_audio"), "ref_audio": ("ref_audio", "reference_audio")}
UPLOAD_PREFIX = "mlx-acestep-upload-"
MIB = 1024 * 1024
DRAIN_SECONDS = 30  # how long a refused body's sender is read from, for it to get the answer (nginx's default)


@dataclass(frozen=True)
class Limits:
    """Bytes: a body's fields (a whole JSON or urlencoded body, a multipart body's non-file parts) and each file."""

    max_request: int
    max_upload: int


def _too_big(what: str, limit: int) -> ProtocolError:
    return ProtocolError(f"{what} is over this server's limit of {limit / MIB:g} MB", 413)


def _refuse(request, gate, opened: bool, what: str, limit: int):
    """A body past a limit: 413 for a caller with the key, the key's own 401 for one without."""
    if not opened:
        gate.check(request, {})
    raise _too_big(what, limit)


async def read_body(request, keep_files: bool = False):
    """(fields, uploaded files) of the body; only `keep_files` routes (the one that takes audio) write uploads, to
    temporary files the caller owns; the others never write any. Raises 401 (key), 413 (size) or 400 (syntax)."""
    state = request.app.state
    gate, limits = state.gate, state.limits
    stream = _Stream(request)
    kind = request.headers.get("content-type", "").lower()
    multipart = kind.startswith("multipart/form-data")
    allowed = limits.max_request + (len(UPLOAD_FIELDS) * limits.max_upload if multipart else 0)
    length = request.headers.get("content-length", "")
    try:
        opened = gate.opens(request)
        if length.isdigit() and int(length) > allowed:
            stream.done = True  # not read at all: the client learns it with the answer, or with a closed connection
            _refuse(request, gate, opened, "the request", allowed)
        if multipart:
            return await _Multipart(request, stream, gate, limits, opened, keep_files).read()
        raw = bytearray()
        async for chunk in stream:
            raw += chunk
            if len(raw) > limits.max_request:
                _refuse(request, gate, opened, "the request", limits.max_request)
    except Exception:
        await stream.drain(allowed)
        raise
    return _fields(kind, raw), {}


def _fields(kind: str, raw: bytes) -> dict:
    if kind.startswith("application/x-www-form-urlencoded"):
        body = {}
        for key, value in urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
            body.setdefault(key, value)
        return body
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: nested past the stack
        raise ProtocolError(
            "the body is not valid JSON (send Content-Type: application/json with a JSON object)"
        ) from None
    if not isinstance(body, dict):
        raise ProtocolError("the body must be a JSON object")
    return body


class _Stream:
    """The body's chunks as the ASGI server hands them over, and whether the last has come."""

    def __init__(self, request):
        self.receive, self.done = request.receive, False

    async def __aiter__(self):
        from starlette.requests import ClientDisconnect

        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            self.done = not message.get("more_body", False)
            yield message.get("body", b"")

    async def drain(self, budget: int) -> None:
        """Read and drop what is left of a refused body (at most `budget` bytes, DRAIN_SECONDS), so that a client
        still sending gets the answer rather than a reset connection (nginx's lingering close); none of it is kept."""
        import anyio

        with anyio.move_on_after(DRAIN_SECONDS):
            while not self.done and budget > 0:
                message = await self.receive()
                if message["type"] != "http.request":
                    return
                budget -= len(message.get("body", b""))
                self.done = not message.get("more_body", False)


class _Multipart:
    """A multipart body parsed as it streams in (python-multipart's parser, as Starlette's, without its spooling)."""

    def __init__(self, request, stream: _Stream, gate, limits: Limits, opened: bool, keep_files: bool):
        self.request, self.stream, self.gate, self.limits = request, stream, gate, limits
        self.opened, self.keep_files = opened, keep_files
        self.body: dict = {}
        self.uploads: dict[str, Path] = {}
        self.fields_size = 0
        self.header, self.headers = [b"", b""], {}
        self.part: dict = {}

    async def read(self):
        parser = _parser(self.request.headers["content-type"], self)
        try:
            async for chunk in self.stream:
                parser.write(chunk)
            parser.finalize()
        except _multipart().MultipartParseError as e:
            self._close(delete=True)
            raise ProtocolError(f"the multipart body is malformed ({e})") from None
        except BaseException:
            self._close(delete=True)
            raise
        return self.body, self.uploads

    def on_part_begin(self):
        self.part, self.headers = {"data": bytearray(), "size": 0, "file": None}, {}

    def on_header_field(self, data, start, end):
        self.header[0] += data[start:end]

    def on_header_value(self, data, start, end):
        self.header[1] += data[start:end]

    def on_header_end(self):
        self.headers[bytes(self.header[0]).lower()] = bytes(self.header[1])
        self.header = [b"", b""]

    def on_headers_finished(self):
        _, options = _options(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self.part["name"] = name
        if b"filename" not in options:
            return
        if not self.opened:  # the key before the body: not one byte of a file from an unknown caller is kept
            self.gate.check(self.request, {})
        self.part["is_file"] = True
        target = next((n for n, aliases in UPLOAD_FIELDS.items() if name in aliases), None)
        filename = options[b"filename"].decode("utf-8", "replace")
        if self.keep_files and target and filename and target not in self.uploads:
            fd, tmp = tempfile.mkstemp(prefix=UPLOAD_PREFIX, suffix=Path(filename).suffix[:8])
            self.uploads[target] = Path(tmp)
            self.part["file"] = os.fdopen(fd, "wb")

    def on_part_data(self, data, start, end):
        size = end - start
        self.part["size"] += size
        if self.part.get("is_file"):
            if self.part["size"] > self.limits.max_upload:
                raise _too_big(f"the uploaded file {self.part['name']!r}", self.limits.max_upload)  # opened here
            if self.part["file"] is not None:
                self.part["file"].write(data[start:end])
            return
        self.fields_size += size
        if self.fields_size > self.limits.max_request:
            _refuse(self.request, self.gate, self.opened, "the request's fields", self.limits.max_request)
        self.part["data"] += data[start:end]

    def on_part_end(self):
        if self.part.get("is_file"):
            if self.part["file"] is not None:
                self.part["file"].close()
            return
        name = self.part.get("name", "")
        self.body.setdefault(name, bytes(self.part["data"]).decode("utf-8", "replace"))
        if name == "ai_token" and not self.opened:
            self.gate.check(self.request, self.body)  # a wrong key is refused here, before any file
            self.opened = True

    def on_end(self):
        pass

    def _close(self, delete: bool) -> None:
        if self.part.get("file") is not None:
            self.part["file"].close()
        for path in self.uploads.values() if delete else ():
            path.unlink(missing_ok=True)


def _parser(content_type: str, handler: _Multipart):
    _, params = _options(content_type.encode("latin-1"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ProtocolError("the multipart body has no boundary (Content-Type: multipart/form-data; boundary=...)")
    names = ("part_begin", "part_data", "part_end", "header_field", "header_value", "header_end")
    names += ("headers_finished", "end")
    callbacks = {f"on_{n}": getattr(handler, f"on_{n}") for n in names}
    return _multipart().MultipartParser(boundary, callbacks)


def _options(value: bytes):
    return _multipart().parse_options_header(value)


def _multipart():
    """python-multipart's parser module, under its name since 0.0.13 or its older one (as Starlette imports it)."""
    try:
        from python_multipart import multipart
    except ModuleNotFoundError:
        from multipart import multipart
    return multipart
