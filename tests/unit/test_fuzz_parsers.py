"""Property-based tests (hypothesis) of every parser of bytes that come from outside: any input gives a result or the
project's own one-line error (`AceStepError` and its subclasses; for the REST body, a `ProtocolError` or an HTTP
4xx), never another exception (issue 32, "Fuzzing, kept in the suite").

Each property runs a bounded, deterministic number of examples in the suite (tests/fuzzing.py); `MLX_ACESTEP_FUZZ=N`
runs N times as many, drawn at random. Every case the fuzzing found is also a plain test below its property.
"""

import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fuzzing import JSON_VALUES, SCALARS, deep, seeded, settings
from hypothesis import given
from hypothesis import strategies as st

from mlx_acestep.errors import AceStepError, first_line

# -- the safetensors header ---------------------------------------------------------------------------------------

DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U32", "BOOL", "F8", "x"]
ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(DTYPES) | JSON_VALUES,
        "shape": st.lists(st.integers(-2, 2**33) | JSON_VALUES, max_size=3) | JSON_VALUES,
        "data_offsets": st.lists(st.integers(-8, 2**65) | JSON_VALUES, max_size=3) | JSON_VALUES,
    },
)
HEADERS = st.dictionaries(st.text(max_size=6), ENTRIES | JSON_VALUES, max_size=3).flatmap(
    lambda h: st.one_of(st.just(h), st.builds(lambda m: h | {"__metadata__": m}, JSON_VALUES))
)


def _header_file(folder: Path, header_bytes: bytes, length: int | None, data: bytes) -> Path:
    path = folder / "x.safetensors"
    n = len(header_bytes) if length is None else length
    path.write_bytes(struct.pack("<Q", n % 2**64) + header_bytes + data)
    return path


def _read_header_or_error(path: Path):
    from mlx_acestep.safetensors_io import read_header

    try:
        return read_header(path)
    except AceStepError as e:
        assert str(path) in first_line(e)  # the one line names the file
        return None


@seeded
@settings(60)
@given(
    header=HEADERS,
    length=st.none() | st.integers(0, 2**64 - 1),
    data=st.binary(max_size=64),
)
def test_any_safetensors_header_is_read_or_refused_in_one_line(header, length, data):
    with tempfile.TemporaryDirectory() as folder:
        path = _header_file(Path(folder), json.dumps(header).encode(), length, data)
        read = _read_header_or_error(path)
        if read is not None:  # what passed is what the format allows: every tensor's bytes inside the file
            entries, metadata, offset = read
            assert isinstance(metadata, dict) and offset == 8 + len(json.dumps(header).encode())
            for entry in entries.values():
                start, end = entry["data_offsets"]
                assert 0 <= start <= end <= len(data) and all(isinstance(s, int) for s in entry["shape"])


@seeded
@settings(30)
@given(raw=st.binary(max_size=96))
def test_any_bytes_as_a_safetensors_file_are_read_or_refused_in_one_line(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.safetensors"
        path.write_bytes(raw)
        _read_header_or_error(path)


@pytest.mark.parametrize(
    "header",
    [
        b'{"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}',  # was TypeError: unhashable type
        b'{"a": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}}',  # was OverflowError
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, Infinity]}}',  # was OverflowError
        b'{"a": {"dtype": "F32", "shape": [true, 1.5], "data_offsets": [0, 4]}}',  # was read as shape [1, 1]
        b'{"a": {"dtype": "F32", "shape": 4, "data_offsets": "04"}}',
        deep(),  # was RecursionError
    ],
    ids=["dtype-list", "shape-1e400", "offset-infinity", "shape-bool-float", "shape-int", "nested"],
)
def test_found_safetensors_headers_are_refused_naming_the_file(tmp_path, header):
    path = _header_file(tmp_path, header, None, b"\0" * 8)
    assert _read_header_or_error(path) is None


# -- adapter files: PEFT folders, ComfyUI files, LyCORIS LoKr --------------------------------------------------------

TARGETS = {"layers.0.self_attn.q_proj": (4, 4), "layers.1.cross_attn.v_proj": (6, 4)}
MODULES = [*TARGETS, "layers.9.self_attn.q_proj", "encoder.layers.0.q_proj", ""]
PREFIXES = ["base_model.model.", "diffusion_model.", "diffusion_model.decoder.", "decoder.", ""]
PARTS = ["lora_A", "lora_B", "lora_down", "lora_up", "alpha", "lora_magnitude_vector", "weight", "x"]
LOKR = ["lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "alpha", "dora_scale", "x"]
VALUES = [0.0, 1.0, -1.0, 0.5, 2.0, 1e30, float("nan"), float("inf")]


@st.composite
def lora_keys(draw):
    module, part = draw(st.sampled_from(MODULES)), draw(st.sampled_from(PARTS))
    tail = draw(st.sampled_from(["", ".weight", ".default.weight"])) if part != "alpha" else ""
    return f"{draw(st.sampled_from(PREFIXES))}{module}.{part}{tail}".lstrip(".")


@st.composite
def lokr_keys(draw):
    module = draw(st.sampled_from(MODULES)).replace(".", "_")
    return f"{draw(st.sampled_from(['lycoris_', '']))}{module}.{draw(st.sampled_from(LOKR))}"


@st.composite
def tensors(draw):
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 4, 6, 8]), max_size=3)))
    values = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=4))
    dtype = draw(st.sampled_from(["float32", "float16", "float64", "int32", "uint8", "bool"]))
    with np.errstate(all="ignore"):
        return np.resize(np.array(values), shape).astype(dtype)


PATTERNS = st.dictionaries(
    st.sampled_from(["q_proj", r"layers\.0\..*", "(?i)q_proj", "[", "(a)\\1", "*", "a{4294967296}"])
    | st.text(max_size=6),
    SCALARS,
    max_size=2,
)
PEFT_CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "peft_type": st.sampled_from(["LORA", "LOHA"]) | SCALARS,
        "r": st.sampled_from([1, 2, 4]) | SCALARS,
        "lora_alpha": st.sampled_from([1, 4, 8.0]) | SCALARS,
        "use_rslora": SCALARS,
        "use_dora": SCALARS,
        "rank_pattern": PATTERNS | JSON_VALUES,
        "alpha_pattern": PATTERNS | JSON_VALUES,
    },
)


def _read_adapter_or_error(path: Path):
    from mlx_acestep.adapters.formats import read_adapter

    try:
        return read_adapter(path, TARGETS)
    except AceStepError as e:
        assert "\n" not in str(e)
        return None


@seeded
@settings(80)
@given(
    weights=st.dictionaries(lora_keys() | lokr_keys(), tensors(), min_size=1, max_size=5),
    metadata=st.none() | st.dictionaries(st.sampled_from(["algo", "format"]), st.sampled_from(["lokr", "pt", ""])),
    config=st.none() | PEFT_CONFIGS | JSON_VALUES,
)
def test_any_adapter_file_is_read_or_refused_in_one_line(weights, metadata, config):
    from safetensors.numpy import save_file

    from mlx_acestep.adapters.formats import PEFT_CONFIG, PEFT_WEIGHTS

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        save_file(weights, str(folder / PEFT_WEIGHTS), metadata=metadata)
        if config is not None:
            (folder / PEFT_CONFIG).write_text(json.dumps(config))
        adapter = _read_adapter_or_error(folder if config is not None else folder / PEFT_WEIGHTS)
        if adapter is not None:  # what loads fits the decoder: every delta on a projection of its shape
            for module, delta in adapter.deltas.items():
                assert delta.shape == TARGETS[module] and np.isfinite(delta.scale)


@seeded
@settings(40)
@given(config=PEFT_CONFIGS | JSON_VALUES)
def test_any_peft_config_is_read_or_refused_in_one_line(config):
    from mlx_acestep.adapters import peft

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / peft.CONFIG
        file.write_text(json.dumps(config))
        try:
            read = peft.read_config(file)
        except AceStepError:
            return
        for module in TARGETS:  # a config that reads resolves every layer's alpha without another exception
            try:
                peft.module_alpha(file, read, module, 4)
            except AceStepError:
                pass


def _lora_pair(folder: Path, config: dict | None, rank: int = 2) -> Path:
    from safetensors.numpy import save_file

    from mlx_acestep.adapters.formats import PEFT_CONFIG, PEFT_WEIGHTS

    down, up = np.ones((rank, 4), np.float32), np.ones((4, rank), np.float32)
    key = "base_model.model.layers.0.self_attn.q_proj"
    save_file({f"{key}.lora_A.weight": down, f"{key}.lora_B.weight": up}, str(folder / PEFT_WEIGHTS))
    if config is not None:
        (folder / PEFT_CONFIG).write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "config",
    [
        {"r": 2, "alpha_pattern": {"(?i)q_proj": 4}},  # compiles alone, not after PEFT's prefix: was re.error
        {"r": 2, "rank_pattern": {"(?i)q_proj": 2}},
        {"r": 2, "alpha_pattern": {"q_proj{4294967296}": 2}},  # was OverflowError
    ],
)
def test_found_peft_configs_are_refused_in_one_line(tmp_path, config):
    assert _read_adapter_or_error(_lora_pair(tmp_path, config)) is None


def test_a_peft_config_nested_past_the_stack_is_refused_in_one_line(tmp_path):
    from mlx_acestep.adapters import peft

    (tmp_path / peft.CONFIG).write_bytes(deep())
    with pytest.raises(AceStepError, match="not a readable JSON file"):
        peft.read_config(tmp_path / peft.CONFIG)
