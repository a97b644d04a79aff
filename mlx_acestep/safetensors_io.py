"""Safetensors files in and out: validated headers, lazy MLX loading, sharded folders, sharded writing.

Corrupt files fail deep inside Rust or MLX, so every file's header is parsed
here first: each tensor's byte range is checked against the file size, and a
truncated or corrupt file gives a one-line error that names the file and the
tensor. Then `mx.load` maps the tensors lazily in their stored dtype (bf16
included): nothing is read until it is used, so a converter can stream a file
one tensor at a time. A folder's weights are `NAME` or the shards listed in
`NAME.index.json` (the Hugging Face layout); `ShardWriter` writes that layout.

`read_safetensors` is the numpy reader for tests and small files (bfloat16 is
widened to float32 exactly: it is the upper half of a float32).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

import mlx.core as mx

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


def load_lazy(path: str | Path) -> dict[str, mx.array]:
    """Every tensor of a validated file as a lazy MLX array in its stored dtype."""
    read_header(path)
    try:
        return mx.load(str(path))
    except (RuntimeError, ValueError) as e:
        raise AceStepError(f"{path}: cannot read ({e})") from None


def weight_files(folder: Path, name: str) -> tuple[list[Path], Path | None]:
    """(the files holding a folder's weights, the shard index or None): `name`, or the shards `name.index.json` lists."""
    folder = Path(folder)
    index = folder / f"{name}.index.json"
    if not index.is_file():
        if not (folder / name).is_file():
            raise AceStepError(f"{folder / name}: file not found")
        return [folder / name], None
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise AceStepError(f"{index}: not a valid shard index ({e})") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise AceStepError(f"{index}: no 'weight_map'")
    shards = sorted({folder / str(shard) for shard in weight_map.values()})
    for shard in shards:
        if not shard.is_file():
            raise AceStepError(f"{index}: lists {shard.name}, which is missing")
    return shards, index


def read_weights(folder: Path, name: str) -> tuple[dict[str, mx.array], list[Path]]:
    """All of a folder's weights as lazy arrays (one file or its shards), and the files read (index first).

    Every header is validated, and every key checked against the index, before any tensor is read.
    """
    files, index = weight_files(folder, name)
    state: dict[str, mx.array] = {}
    weight_map = json.loads(index.read_text())["weight_map"] if index else None
    for path in files:
        tensors = load_lazy(path)
        if weight_map is not None:
            unlisted = sorted(k for k in tensors if weight_map.get(k) != path.name)
            if unlisted:
                raise AceStepError(f"{path}: key '{unlisted[0]}' is not listed for this shard in {index.name}")
        for key in tensors:
            if key in state:
                raise AceStepError(f"{path}: key '{key}' is in two files")
        state.update(tensors)
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise AceStepError(f"{index}: key '{missing[0]}' is listed but in no shard")
    return state, ([index] if index else []) + files


class ShardWriter:
    """Writes tensors into `folder` as they come, `name` alone or shards of about `shard_bytes` plus an index.

    Each shard is evaluated and written when full, so only one shard's tensors are in memory at a time.
    One shard is written as plain `name` (no index). `close()` returns the files written.
    """

    def __init__(self, folder: Path, name: str, shard_bytes: int, metadata: dict | None = None):
        self.folder, self.name, self.shard_bytes = Path(folder), name, shard_bytes
        self.metadata = metadata or {}
        self.pending: dict[str, mx.array] = {}
        self.pending_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, key: str, value: mx.array) -> None:
        self.pending[key] = value
        self.pending_bytes += value.nbytes
        if self.pending_bytes >= self.shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        path = self.folder / f".shard-{len(self.shards):05d}.safetensors"
        mx.save_safetensors(str(path), self.pending, metadata=self.metadata)
        self.shards.append((path, list(self.pending)))
        self.total_bytes += self.pending_bytes
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[Path]:
        self._flush()
        if len(self.shards) <= 1:
            final = self.folder / self.name
            if self.shards:
                self.shards[0][0].rename(final)
            else:
                mx.save_safetensors(str(final), {}, metadata=self.metadata)
            return [final]
        stem, suffix = self.name.rsplit(".", 1)
        n, files, weight_map = len(self.shards), [], {}
        for i, (path, keys) in enumerate(self.shards):
            final = self.folder / f"{stem}-{i + 1:05d}-of-{n:05d}.{suffix}"
            path.rename(final)
            files.append(final)
            weight_map.update({k: final.name for k in keys})
        index = self.folder / f"{self.name}.index.json"
        index.write_text(json.dumps({"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))},
                                    indent=2) + "\n")
        return [index, *files]
