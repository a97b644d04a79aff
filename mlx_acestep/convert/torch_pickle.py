"""Read tensors from a `torch.save` file without torch and without running pickle code.

A `.pt` file is a zip holding `<name>/data.pkl` (a pickle describing the
object) and `<name>/data/<key>` (the raw bytes of each storage). Unpickling
with the stock `pickle` module would import and call whatever the pickle
names, so this reader only resolves the handful of globals a saved tensor
(or a dict of tensors) needs, and rebuilds each tensor as a numpy array from
its storage bytes. Anything else in the pickle is an error, not a call.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import AceStepError

# torch storage class name -> numpy dtype (bfloat16 is widened to float32 after reading)
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_ignored):
    """The stand-in for torch._utils._rebuild_tensor_v2: a strided view of the storage."""
    return ("tensor", storage, int(offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise AceStepError(
            f"{self.source}: refusing to load '{module}.{name}' (only plain tensors are read from .pt files)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and pid[1] in STORAGE_DTYPES):
            raise AceStepError(f"{self.source}: unsupported storage record {pid!r:.80}")
        _, kind, key, _location, numel = pid
        return _Storage(STORAGE_DTYPES[kind], str(key), int(numel))


def _materialize(archive: zipfile.ZipFile, prefix: str, record, source: str) -> np.ndarray:
    _, storage, offset, size, stride = record
    try:
        raw = archive.read(f"{prefix}data/{storage.key}")
    except KeyError:
        raise AceStepError(f"{source}: storage {storage.key!r} missing from the archive") from None
    if storage.dtype == "bfloat16":
        flat = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        flat = np.frombuffer(raw, dtype=np.dtype(storage.dtype).newbyteorder("<"))
    if flat.size < storage.numel:
        raise AceStepError(f"{source}: storage {storage.key!r} holds {flat.size} values, expected {storage.numel}")
    if size and (offset + sum((n - 1) * s for n, s in zip(size, stride)) >= flat.size):
        raise AceStepError(f"{source}: tensor of shape {size} reaches past its storage")
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride])
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


def read_torch_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a `torch.save` file: `{"": array}` for a bare tensor, else its (flat) dict."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise AceStepError(f"{source}: file not found")
    if not zipfile.is_zipfile(path):
        raise AceStepError(f"{source}: not a torch zip archive (files from torch < 1.6 are not supported)")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise AceStepError(f"{source}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = (
            archive.read(f"{prefix}byteorder").decode().strip()
            if f"{prefix}byteorder" in archive.namelist()
            else "little"
        )
        if byteorder != "little":
            raise AceStepError(f"{source}: big-endian archives are not supported")
        with archive.open(pickles[0]) as f:
            try:
                obj = _RestrictedUnpickler(f, source).load()
            except AceStepError:
                raise
            except Exception as e:  # a corrupt pickle stream
                raise AceStepError(f"{source}: cannot read the pickle ({e})") from None

        def is_tensor(x):
            return isinstance(x, tuple) and len(x) == 5 and x[0] == "tensor"

        if is_tensor(obj):
            return {"": _materialize(archive, prefix, obj, source)}
        if isinstance(obj, dict) and obj and all(isinstance(k, str) and is_tensor(v) for k, v in obj.items()):
            return {k: _materialize(archive, prefix, v, source) for k, v in obj.items()}
    raise AceStepError(f"{source}: holds neither a tensor nor a dict of tensors")
