"""What every route does to a request before its own work: the API key, the body in any of the encodings clients
send (server/body.py, the key checked before it is read), and the folders a request may name files in."""

from __future__ import annotations

import hmac
from pathlib import Path

from .body import read_body
from .protocol import ProtocolError

__all__ = ["Gate", "InputFolder", "read_body"]


class Gate:
    """The API key as the reference checks it: `ai_token` in the body, else `Authorization: Bearer KEY`."""

    def __init__(self, api_key: str | None):
        self.api_key = api_key

    def opens(self, request) -> bool:
        """Whether the request may send its body: no key is needed, or its Authorization header carries it."""
        header = request.headers.get("authorization")
        return self.api_key is None or (header is not None and _same(_bearer(header), self.api_key))

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
        if not _same(_bearer(header), self.api_key):
            raise HTTPException(401, "Invalid API key")


def _bearer(header: str) -> str:
    return header.removeprefix("Bearer ")


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
        if "\x00" in path:  # no file has one; the OS refuses it (a ValueError: it was a 500)
            raise ProtocolError(f"{what} {path!r} holds a NUL character")
        try:
            resolved = Path(path).expanduser().resolve()
            if not any(resolved.is_relative_to(root) for root in self.roots):
                raise ProtocolError(f"{what} {path!r} is outside the allowed input folders ({self.where()})", 403)
            found = resolved.is_file() or (folders and resolved.is_dir())
        except (OSError, RuntimeError):  # a name too long for the file system, a symlink loop: no such file
            found = False
        if not found:
            raise ProtocolError(f"{what} {path!r} does not exist", 404)
        return resolved

    def where(self) -> str:
        return ", ".join(str(root) for root in self.roots)
