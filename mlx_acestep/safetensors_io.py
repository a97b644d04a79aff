"""Safetensors files in and out: validated headers, lazy MLX loading, sharded folders, sharded writing.

Corrupt files fail deep inside Rust or MLX, so every file's header is parsed
here first: each tensor's byte range is checked against the file size, and a
truncated or corrupt file gives a one-line error that names the file and the
tensor. Then `mx.load` maps the tensors lazily in their stored dtype (bf16
included): nothing is read until it is used, so a converter can stream a file
one tensor at a time. A folder's weights are `NAME` or the shards listed in
`NAME.index.json` (the Hugging Face layout); `write_sharded` writes that layout, one block of rows at a time.

`read_safetensors` is the numpy reader for tests and small files (bfloat16 is
widened to float32 exactly: it is the upper half of a float32).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from .errors import BAD_JSON, AceStepError

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

# What PyTorch's own formats begin with: a zip archive (torch.save since 1.6) or a bare pickle (protocol 2-5).
_PICKLE_STARTS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


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
            # Only here: a safetensors header length can begin with the same bytes (640 is b"\x80\x02..."), while
            # a pickle's or a zip's first 8 bytes never read as a length that fits the file.
            if head.startswith(_PICKLE_STARTS):  # unpickling runs the file's code: never, whatever its name says
                raise AceStepError(
                    f"{path}: a PyTorch pickle (torch.save), not safetensors: weights are read from .safetensors "
                    "only (unpickling can run code). Convert it where you trust the file: "
                    "safetensors.torch.save_file(torch.load(f, weights_only=True), 'x.safetensors')"
                )
            raise AceStepError(f"{path}: corrupt or truncated safetensors header")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except BAD_JSON:
        raise AceStepError(f"{path}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise AceStepError(f"{path}: corrupt safetensors header")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):  # the format's metadata is a string-to-string object; readers index it
        raise AceStepError(f"{path}: corrupt safetensors header (__metadata__ is not an object)")
    data_size = size - 8 - n
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise AceStepError(f"{path}: corrupt header entry for tensor '{name}'") from None
        if not (isinstance(shape, list) and all(map(_whole, shape)) and _whole(start) and _whole(end)):
            # the format's shape and offsets are JSON integers: 1e400 or true is a damaged header, not a size
            raise AceStepError(f"{path}: corrupt header entry for tensor '{name}' (shape or offsets not integers)")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise AceStepError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
        # math.prod, not numpy's: 2**32 x 2**32 wraps to 0 bytes in int64 and would pass as an empty tensor
        if min(shape, default=0) < 0 or end - start != itemsize * math.prod(shape) or start < 0:
            raise AceStepError(f"{path}: tensor '{name}' has an inconsistent byte range")
        if end > data_size:
            raise AceStepError(f"{path}: truncated (tensor '{name}' runs past the end of the file)")
    return header, metadata, 8 + n


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    except (OSError, AttributeError, *BAD_JSON) as e:
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


_SAFETENSORS_DTYPES = {
    mx.float32: "F32",
    mx.float16: "F16",
    mx.bfloat16: "BF16",
    mx.uint32: "U32",
    mx.int32: "I32",
    mx.int64: "I64",
    mx.uint8: "U8",
    mx.int8: "I8",
    mx.bool_: "BOOL",
}


@dataclass
class Output:
    """What one source tensor becomes in the output: one or more tensors (a quantized weight: weight, scales,
    biases) that share their first axis, produced block by block along it by `produce(start, stop)`."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[mx.Dtype, ...]
    produce: Callable[[int, int], tuple[mx.array, ...]]
    source_row_bytes: int = 0  # what one row costs while it is produced (a float32 source row), for the block size

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) * d.size for s, d in zip(self.shapes, self.dtypes))

    @property
    def rows(self) -> int:
        return self.shapes[0][0] if self.shapes[0] else 1


def _as_bytes(block: mx.array) -> memoryview:
    if block.dtype == mx.bfloat16:  # numpy has no bfloat16: the same 16 bits as uint16
        block = block.view(mx.uint16)
    return memoryview(np.ascontiguousarray(np.asarray(block)).reshape(-1).view(np.uint8))


def write_sharded(
    folder: Path,
    name: str,
    outputs: list[Output],
    shard_bytes: int,
    block_bytes: int = 64 * 2**20,
    metadata: dict | None = None,
) -> list[Path]:
    """Write `outputs` as `name` (one file) or as shards of about `shard_bytes` with `name.index.json`.

    Every header is written first (the shapes and dtypes are known), then each tensor is produced and written
    in blocks of rows of about `block_bytes`, so memory holds one block, not a tensor and not a shard. Returns
    the files written (the index first).
    """
    folder = Path(folder)
    shards: list[list[Output]] = [[]]
    size = 0
    for out in outputs:
        if shards[-1] and size + out.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(out)
        size += out.nbytes
    stem, suffix = name.rsplit(".", 1)
    paths = (
        [folder / name]
        if len(shards) == 1
        else [folder / f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{suffix}" for i in range(len(shards))]
    )
    weight_map, total = {}, 0
    for path, shard in zip(paths, shards):
        total += _write_file(path, shard, block_bytes, metadata or {})
        weight_map.update({n: path.name for out in shard for n in out.names})
    if len(paths) == 1:
        return paths
    index = folder / f"{name}.index.json"
    index.write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n"
    )
    return [index, *paths]


def _write_file(path: Path, outputs: list[Output], block_bytes: int, metadata: dict) -> int:
    header, offset, regions = {}, 0, []
    for out in outputs:
        starts = []
        for n, shape, dtype in zip(out.names, out.shapes, out.dtypes):
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.size
            header[n] = {
                "dtype": _SAFETENSORS_DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            starts.append(offset)
            offset += nbytes
        regions.append(starts)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        base = 8 + len(raw)
        for out, starts in zip(outputs, regions):
            per_row = max(1, out.nbytes // max(out.rows, 1) + out.source_row_bytes)  # output row + its source row
            step = max(1, block_bytes // per_row)
            for a in range(0, out.rows, step):
                b = min(out.rows, a + step)
                with mx.stream(mx.cpu):  # conversion needs no GPU, and float64 sources work on the CPU only
                    blocks = out.produce(a, b)
                    mx.eval(*blocks)
                for block, start, shape in zip(blocks, starts, out.shapes):
                    row_bytes = (int(np.prod(shape[1:], dtype=np.int64)) if shape else 1) * block.dtype.size
                    f.seek(base + start + (a * row_bytes if shape else 0))
                    f.write(_as_bytes(block))
                del blocks
            out.produce = None  # drop the (now materialised) source tensor it refers to
        f.truncate(base + offset)
    return offset


def first_non_finite(folder: Path, name: str) -> str | None:
    """The first float tensor of a folder's weights holding NaN or inf, as `file: 'key'`; None when all are finite.
    One tensor at a time (lazy): run after a phase produced NaN, to tell damaged files from a numerical overflow."""
    files, _ = weight_files(folder, name)
    for path in files:
        for key, value in sorted(load_lazy(path).items()):
            if mx.issubdtype(value.dtype, mx.floating) and not bool(mx.all(mx.isfinite(value)).item()):
                return f"{path}: '{key}'"
    return None
