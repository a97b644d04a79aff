"""The server's settings, checked by the server itself (`make_app` refuses bad ones, whoever starts it).

No FastAPI or MLX import here: `mlx-acestep serve --help` reads the defaults and help.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import AceStepError
from ..fields import Field, Fields

SERVER = Fields(
    Field("host", "text", default="127.0.0.1", help="Address to bind (loopback by default)."),
    Field("port", "integer", 0, 65535, default=8001, help="Port to listen on (0: any free one)."),
    Field(
        "api_key",
        "text",
        optional=True,
        help="Require this key (Authorization: Bearer KEY, or ai_token in the body).",
    ),
    Field("queue_size", "integer", 1, default=16, help="Jobs that may wait; more get 429."),
    Field(
        "keep_hours",
        "number",
        0,
        low_open=True,
        default=24.0,
        help="Results older than this are deleted.",
        note=" (results would be deleted as they finish, or never)",
    ),
    Field(
        "max_request_mb",
        "number",
        0,
        low_open=True,
        default=16.0,
        help="Largest request body, uploads aside (a JSON body, a form's fields); more gets 413.",
    ),
    Field(
        "max_upload_mb",
        "number",
        0,
        low_open=True,
        default=256.0,
        help="Largest uploaded audio file (10 minutes of 32-bit stereo WAV at 48 kHz: 230 MB); more gets 413.",
    ),
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ORIGIN = re.compile(r"^https?://[^/\s?#]+$")  # what a browser sends as Origin: a scheme and a host, no path
# "*": any page; "null": what a page opened from file:// sends (upstream allows it: api/route_setup.py:64)
OPAQUE_ORIGINS = ("*", "null")


@dataclass(frozen=True)
class ServerConfig:
    """Where results go, which folders requests may read (`input_dirs`: one or several), who may call, how many jobs
    wait, how long results are kept and how large a request may be. An empty API key means none."""

    output_dir: str | Path
    input_dirs: tuple[str | Path, ...] | str | Path = ()
    host: str = SERVER.default("host")
    port: int = SERVER.default("port")
    api_key: str | None = None
    queue_size: int = SERVER.default("queue_size")
    keep_hours: float = SERVER.default("keep_hours")
    max_request_mb: float = SERVER.default("max_request_mb")
    max_upload_mb: float = SERVER.default("max_upload_mb")
    cors_origins: tuple[str, ...] = ()  # the browser pages on other origins that may call the server ("*": any)

    def __post_init__(self):
        SERVER.check_into(self)
        object.__setattr__(self, "api_key", self.api_key or None)
        folders = (self.input_dirs,) if isinstance(self.input_dirs, (str, Path)) else tuple(self.input_dirs or ())
        for folder in folders:  # refused before the model loads, not at the first request naming a file
            if not Path(folder).expanduser().is_dir():
                raise AceStepError(f"--input-dir {folder}: not a folder")
        object.__setattr__(self, "input_dirs", folders)
        origins = (self.cors_origins,) if isinstance(self.cors_origins, str) else tuple(self.cors_origins or ())
        for origin in origins:
            if origin not in OPAQUE_ORIGINS and not ORIGIN.match(origin):
                raise AceStepError(
                    f"--cors-origin {origin}: not an origin (give it as http://host:port, null for a page opened "
                    "from a file, or *)"
                )
        object.__setattr__(self, "cors_origins", tuple(o.rstrip("/") for o in origins))

    @property
    def open_to_others(self) -> bool:
        """Bound beyond this machine without a key: anyone who can reach the port can generate and download."""
        return self.host not in LOOPBACK and not self.api_key
