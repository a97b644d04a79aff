"""What every route does to a request before its own work: the API key, the body in any of the encodings clients
send, and the folders a request may name files in."""

from __future__ import annotations

import hmac
import json
import os
import shutil
import tempfile
from pathlib import Path

from .protocol import ProtocolError

UPLOAD_PREFIX = "mlx-acestep-upload-"  # the temporary files of sent audio, deleted when their job ends
UPLOAD_FIELDS = {"src_audio": ("ctx_audio", "src_audio"), "ref_audio": ("ref_audio", "reference_audio")}


class Gate:
    """The API key as the reference checks it: `ai_token` in the body, else `Authorization: Bearer KEY`."""

    def __init__(self, api_key: str | None):
        self.api_key = api_key

    def check(self, request, body=None) -> None:
        from fastapi import HTTPException

        if self.api_key is None:
            return
        token = (body or {}).get("ai_token")
        if token:
            if not _same(token, self.api_key):
                raise HTTPException(401, "Invalid ai_token")
            return
        header = request.headers.get("authorization")
        if header is None:
            raise HTTPException(
                401, "Missing ai_token or Authorization header" if body is not None else "Missing Authorization header"
            )
        if not _same(header.removeprefix("Bearer "), self.api_key):
            raise HTTPException(401, "Invalid API key")


def _same(given, key: str) -> bool:
    """The key compared in constant time (a timing difference would tell a client how much of a guess is right)."""
    return hmac.compare_digest(str(given).encode(), key.encode())


class InputFolder:
    """The folders whose files requests may name (source / reference audio, adapters); none: no file may be named.
    Clients send absolute paths of their own folders (the VST3 plugin's, the DAW's), hence several."""

    def __init__(self, roots):
        self.roots = tuple(roots)

    def allowed(self, path: str, what: str, folders: bool = False) -> Path:
        if not self.roots:
            raise ProtocolError(
                f"{what} paths are not allowed here (start the server with --input-dir, or upload the file)", 403
            )
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise ProtocolError(f"{what} {path!r} is outside the allowed input folders ({self.where()})", 403)
        if not (resolved.is_file() or (folders and resolved.is_dir())):
            raise ProtocolError(f"{what} {path!r} does not exist", 404)
        return resolved

    def where(self) -> str:
        return ", ".join(str(root) for root in self.roots)


async def read_body(request, keep_files: bool = False):
    """(fields, uploaded files) of a JSON, urlencoded or multipart body; only `keep_files` routes (the one that
    takes audio) write uploads to temporary files, the others never leave any behind."""
    kind = request.headers.get("content-type", "").lower()
    if kind.startswith("multipart/form-data") or kind.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        body, uploads = {}, {}
        for key, value in form.multi_items():
            if hasattr(value, "filename"):
                for name, aliases in UPLOAD_FIELDS.items() if keep_files else ():
                    if key in aliases and value.filename and name not in uploads:
                        suffix = Path(value.filename).suffix[:8]
                        fd, tmp = tempfile.mkstemp(prefix=UPLOAD_PREFIX, suffix=suffix)
                        with os.fdopen(fd, "wb") as f:
                            shutil.copyfileobj(value.file, f)
                        uploads[name] = Path(tmp)
            else:
                body.setdefault(key, value)
        return body, uploads
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError(
            "the body is not valid JSON (send Content-Type: application/json with a JSON object)"
        ) from None
    if not isinstance(body, dict):
        raise ProtocolError("the body must be a JSON object")
    return body, {}
