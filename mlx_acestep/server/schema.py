"""The request bodies the routes read by hand (server/body.py: JSON, a form or multipart), described in the OpenAPI
schema FastAPI serves at /openapi.json, so that a client, and the fuzzer that sends them (tests/server/
test_fuzz_rest.py), sees each route's fields. Each route names its fields from where they are defined (protocol.py's
ALIASES for a task, chat.py's for a chat request); the values are any JSON: the protocol reads them leniently (a
number sent as text, a flag as "true") and refuses what does not parse naming the field.
"""

from __future__ import annotations

ANY: dict = {}
TEXT = {"type": "string"}
NUMBER = {"type": "number"}
OBJECT = {"type": "object"}


def request_body(fields: dict[str, dict], files: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> dict:
    """`openapi_extra` of a route whose body holds `fields` (name -> JSON schema) as JSON, a form, or multipart with
    `files` as file parts. A form's values are text."""
    json_schema = {"type": "object", "properties": fields, "required": list(required)}
    form = {"type": "object", "properties": dict.fromkeys(fields, TEXT), "required": list(required)}
    upload = {"type": "string", "format": "binary"}
    multipart = form | {"properties": form["properties"] | dict.fromkeys(files, upload)}
    content = {"application/json": {"schema": json_schema}, "application/x-www-form-urlencoded": {"schema": form}}
    content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": False, "content": content}}


def named(*names: str, schema: dict = ANY) -> dict[str, dict]:
    return dict.fromkeys(names, schema)
