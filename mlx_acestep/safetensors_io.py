"""Read safetensors files with numpy alone, validating them first.

`safetensors.numpy` cannot represent bfloat16 (the real DiT checkpoints are
bf16) and corrupt files fail deep inside Rust or MLX. This reader parses the
header itself, checks every tensor's byte range against the file size, and
memory-maps the data, so a truncated or corrupt file gives a one-line error
that names the file and the tensor. bfloat16 is widened to float32 exactly
(it is the upper half of a float32).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .errors import AceStepError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # widened to float32 on read
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "U32": np.uint32,  # MLX's packed quantized weights
    "BOOL": np.bool_,
}

_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: str | Path) -> tuple[dict, dict, int]:
    """Return (tensor entries, metadata, data offset) after validating the file."""
    path = Path(path)
    if not path.is_file():
        raise AceStepError(f"{path}: file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise AceStepError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER or 8 + n > size:
            raise AceStepError(f"{path}: corrupt or truncated safetensors header")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AceStepError(f"{path}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise AceStepError(f"{path}: corrupt safetensors header")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = [int(s) for s in entry["shape"]]
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise AceStepError(f"{path}: corrupt header entry for tensor '{name}'") from None
        if dtype not in _DTYPES:
            raise AceStepError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
        if end - start != itemsize * int(np.prod(shape, dtype=np.int64)) or start < 0:
            raise AceStepError(f"{path}: tensor '{name}' has an inconsistent byte range")
        if end > data_size:
            raise AceStepError(f"{path}: truncated (tensor '{name}' runs past the end of the file)")
    return header, metadata, 8 + n


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a file as numpy arrays (memory-mapped where possible)."""
    header, _, offset = read_header(path)
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        raw = buf[offset + start : offset + end]
        shape = tuple(entry["shape"])
        if entry["dtype"] == "BF16":
            bits = raw.view(np.uint16).astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(shape)
        else:
            out[name] = raw.view(_DTYPES[entry["dtype"]]).reshape(shape)
    return out
