"""Property-based tests (hypothesis) of every parser of bytes that come from outside: any input gives a result or the
project's own one-line error (`AceStepError` and its subclasses; for the REST body, a `ProtocolError` or an HTTP
4xx), never another exception (issue 32, "Fuzzing, kept in the suite").

Each property runs a bounded, deterministic number of examples in the suite (tests/fuzzing.py); `MLX_ACESTEP_FUZZ=N`
runs N times as many, drawn at random. Every case the fuzzing found is also a plain test below its property.
"""

import asyncio
import json
import struct
import tempfile
from pathlib import Path
from types import SimpleNamespace

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


# -- the metadata sidecar and its replay -----------------------------------------------------------------------------


def _generate_params() -> list[str]:
    from mlx_acestep.cli.generate import generate

    return [p.name for p in generate.params]


REPLAYS = st.dictionaries(st.sampled_from(_generate_params()) | st.text(max_size=6), JSON_VALUES, max_size=6)
SIDECARS = st.fixed_dictionaries(
    {}, optional={"replay": REPLAYS | JSON_VALUES, "sampler": JSON_VALUES, "sidecar": JSON_VALUES, "format": SCALARS}
)


def _replay_or_error(path: Path):
    """What `generate --from-metadata PATH` does before it loads a model: read, check each field, build the
    request; a result, or an AceStepError."""
    import click

    from mlx_acestep.cli.generate import _request, generate
    from mlx_acestep.cli.metadata import read_metadata, replayable

    ctx = generate.make_context("generate", ["a caption"])
    with ctx:
        try:
            recorded = replayable(read_metadata(path), ctx, path)
            for name in recorded:  # as generate marks what the file gave: not the flags' defaults any more
                ctx.set_parameter_source(name, click.core.ParameterSource.ENVIRONMENT)
            return _request(ctx.params | recorded)
        except AceStepError as e:
            assert "\n" not in str(e).strip()
            return None


@seeded
@settings(60)
@given(sidecar=SIDECARS | JSON_VALUES)
def test_any_sidecar_is_replayed_or_refused_in_one_line(sidecar):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "song.json"
        path.write_text(json.dumps(sidecar))
        _replay_or_error(path)


@seeded
@settings(20)
@given(raw=st.binary(max_size=64))
def test_any_bytes_as_a_sidecar_or_audio_file_are_refused_in_one_line(raw):
    with tempfile.TemporaryDirectory() as folder:
        for name in ("song.json", "song.wav", "song.flac"):
            (Path(folder) / name).write_bytes(raw)
            assert _replay_or_error(Path(folder) / name) is None


def test_a_sidecar_nested_past_the_stack_is_refused_in_one_line(tmp_path):
    (tmp_path / "song.json").write_bytes(deep())
    assert _replay_or_error(tmp_path / "song.json") is None


def test_a_sidecar_naming_a_line_break_is_refused_in_one_line(tmp_path):
    """Found by the fuzzing: the name was quoted as it is, so the one-line error broke in two."""
    (tmp_path / "song.json").write_text(json.dumps({"sidecar": "\n"}))
    assert _replay_or_error(tmp_path / "song.json") is None


# -- a training dataset folder -----------------------------------------------------------------------------------------

ROW_FIELDS = ["file", "caption", "lyrics", "bpm", "key", "time_signature", "language", "genre"]
FIELD_VALUES = JSON_VALUES | st.sampled_from(["rain", "120", "C major", "4", "en", 120])
OPTIONAL_FIELDS = {name: FIELD_VALUES for name in ROW_FIELDS[2:-1]}
TEXTS = st.binary(max_size=24) | st.text(max_size=24).map(str.encode)


@st.composite
def dataset_folders(draw):
    """(file name -> bytes or None for a readable 6 s clip) of a dataset folder, its metadata among them."""
    files = {name: None for name in draw(st.lists(st.sampled_from(["a.wav", "b.flac"]), max_size=2, unique=True))}
    if draw(st.integers(0, 3)) == 0:
        files["c.wav"] = draw(st.binary(max_size=32))  # audio by its name only
    kind = draw(st.sampled_from(["jsonl", "csv", "sidecars", "none"]))
    if kind == "jsonl":
        rows = [  # one row per clip, its values anything JSON holds: the clips reach every field's check
            draw(st.fixed_dictionaries({"file": st.just(name), "caption": FIELD_VALUES}, optional=OPTIONAL_FIELDS))
            for name in files
        ]
        extra = draw(st.sampled_from([b""] * 6 + [b"\n{", b"\n[1]", b"\n\xff", b'\n{"genre": 1}', b'\n{"file": 1}']))
        files["metadata.jsonl"] = "\n".join(json.dumps(r) for r in rows).encode() + extra
    elif kind == "csv":
        fields = draw(st.lists(st.sampled_from(ROW_FIELDS), min_size=1, max_size=4, unique=True))
        rows = draw(st.lists(st.lists(st.text(max_size=6) | st.sampled_from(["a.wav", "120", "4"]), max_size=5)))
        lines = [",".join(fields), *(",".join(r) for r in rows)]
        files["metadata.csv"] = "\n".join(lines).encode()
    elif kind == "sidecars":
        for name in list(files):
            stem = name.rsplit(".", 1)[0]
            files[f"{stem}.txt"], files[f"{stem}.lyrics.txt"] = draw(TEXTS), draw(TEXTS)
    return files


def _scan_or_error(folder: Path):
    from mlx_acestep.training.dataset import scan_dataset

    try:
        return scan_dataset(folder)
    except AceStepError as e:
        assert "\n" not in str(e).strip()
        return None


def _write_dataset(folder: Path, files: dict) -> None:
    import soundfile as sf

    for name, raw in files.items():
        if raw is None:
            sf.write(str(folder / name), np.zeros(6 * 1000, np.float32), 1000)  # 6 s at 1 kHz: small and long enough
        else:
            (folder / name).write_bytes(raw)


@seeded
@settings(50)
@given(files=dataset_folders())
def test_any_dataset_folder_is_scanned_or_refused_in_one_line(files):
    with tempfile.TemporaryDirectory() as folder:
        _write_dataset(Path(folder), files)
        clips = _scan_or_error(Path(folder))
        for clip in clips or ():  # what is accepted has what training reads: a caption, lyrics, metas as text
            assert isinstance(clip.caption, str) and clip.caption.strip() and isinstance(clip.lyrics, str)
            assert clip.bpm is None or isinstance(clip.bpm, int)
            assert all(v is None or isinstance(v, str) for v in (clip.key, clip.time_signature, clip.language))


@pytest.mark.parametrize(
    "files",
    [
        {"a.wav": None, "a.txt": b"\xff rain"},  # UnicodeDecodeError (issue 32 item 3)
        {"a.wav": None, "metadata.jsonl": b'{"file": "a.wav", "caption": "rain"}\n\xff'},  # UnicodeDecodeError
        {"a.wav": None, "metadata.csv": b"file,caption\na.wav,\xff"},  # UnicodeDecodeError
        {"a.wav": None, "metadata.jsonl": b'{"file": "a.wav", "caption": "rain", "lyrics": ["la"]}'},  # AttributeError
        {"a.wav": None, "metadata.jsonl": b'{"file": "a.wav", "caption": "rain", "bpm": Infinity}'},  # OverflowError
        {"a.wav": None, "metadata.jsonl": deep()},  # RecursionError
    ],
    ids=[
        "sidecar-not-utf8",
        "jsonl-not-utf8",
        "csv-not-utf8",
        "lyrics-list",
        "bpm-infinity",
        "nested",
    ],
)
def test_found_dataset_folders_are_refused_in_one_line(tmp_path, files):
    _write_dataset(tmp_path, files)
    assert _scan_or_error(tmp_path) is None


@pytest.mark.parametrize(
    "row",
    [
        {"language": ["en"]},
        {"language": 7},
        {"bpm": 1.5},
        {"bpm": True},
        {"caption": 123},
    ],
    ids=repr,
)
def test_found_dataset_values_of_the_wrong_type_are_refused(tmp_path, row):
    """They were taken as they are (a list as the language, 1.5 BPM as 1, true as 1) or misnamed (123: "no caption")."""
    _write_dataset(
        tmp_path, {"a.wav": None, "metadata.jsonl": json.dumps({"file": "a.wav", "caption": "rain"} | row).encode()}
    )
    from mlx_acestep.training.dataset import scan_dataset

    with pytest.raises(AceStepError, match=f"'?{next(iter(row))}'? must be"):
        scan_dataset(tmp_path)


def test_a_csv_row_with_a_cell_past_the_header_is_refused_in_one_line(tmp_path):
    """Found by the fuzzing: csv files such a cell under the column None, which sorted() could not order beside a
    named unknown column (TypeError)."""
    _write_dataset(tmp_path, {"a.wav": None, "metadata.csv": b"file,caption,genre\na.wav,rain,pop,extra"})
    with pytest.raises(AceStepError, match="unknown columns"):
        from mlx_acestep.training.dataset import scan_dataset

        scan_dataset(tmp_path)


# -- a REST request's body (JSON, urlencoded, multipart) and its fields -----------------------------------------------


def _aliases() -> list[str]:
    from mlx_acestep.server.body import UPLOAD_FIELDS
    from mlx_acestep.server.protocol import ALIASES, NESTED

    return sorted({a for names in ALIASES.values() for a in names} | set(NESTED) | set(UPLOAD_FIELDS) | {"ai_token"})


FIELD_NAMES = st.sampled_from(_aliases())
JSON_BODIES = st.dictionaries(FIELD_NAMES | st.text(max_size=6), JSON_VALUES, max_size=8)
FORM_VALUES = st.text(max_size=12) | SCALARS.map(lambda v: v if isinstance(v, str) else json.dumps(v))
FORM_BODIES = st.dictionaries(FIELD_NAMES, FORM_VALUES, max_size=8)


def _fields_or_refusal(body: dict, uploads: dict | None = None):
    """What /release_task makes of a body's fields (server/routes.py submit, without the pipeline): the request, or
    the refusal it answers as a 4xx."""
    from mlx_acestep.pipeline.request import GenerationRequest
    from mlx_acestep.server.protocol import ProtocolError, input_paths, request_fields

    try:
        input_paths(body)
        fields, _ = request_fields(body, "turbo", dict(uploads or {}))
        return GenerationRequest(**fields)
    except (AceStepError, ProtocolError) as e:
        assert "\n" not in str(e).strip()
        return None


@seeded
@settings(150)
@given(body=JSON_BODIES)
def test_any_json_task_is_a_request_or_a_refusal(body):
    _fields_or_refusal(body)


@seeded
@settings(100)
@given(body=FORM_BODIES)
def test_any_form_task_is_a_request_or_a_refusal(body):
    _fields_or_refusal(body)


def _read_body(kind: str, raw: bytes, chunk: int = 64):
    """server/body.py's read_body on `raw` sent in chunks, as the ASGI server hands a body over: (fields, uploads),
    or None for a refusal (a ProtocolError or HTTP error below 500)."""
    from fastapi import HTTPException
    from starlette.requests import Request

    from mlx_acestep.server.body import Limits, read_body
    from mlx_acestep.server.http import Gate
    from mlx_acestep.server.protocol import ProtocolError

    parts = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    state = SimpleNamespace(gate=Gate(None), limits=Limits(4096, 4096))
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "app": SimpleNamespace(state=state)}
    scope["headers"] = [(b"content-type", kind.encode("latin-1"))]
    try:
        return asyncio.run(read_body(Request(scope, receive), keep_files=True))
    except ProtocolError as e:
        assert e.status < 500 and "\n" not in str(e)
    except HTTPException as e:
        assert e.status_code < 500
    return None


@st.composite
def multipart_bodies(draw):
    """(content type, bytes) of a multipart body: fields and files under the protocol's names, then perhaps cut short
    or with one byte changed."""
    boundary = draw(st.text("abcXYZ019-_'()+,./:=? ", min_size=1, max_size=12))
    parts = draw(st.lists(st.tuples(FIELD_NAMES, st.none() | st.text(max_size=8), st.binary(max_size=40)), max_size=4))
    raw = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        raw += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    raw += f"--{boundary}--\r\n".encode()
    damage = draw(st.sampled_from(["none", "cut", "byte"]))
    if damage != "none" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] if damage == "cut" else raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    kind = draw(
        st.sampled_from([f"multipart/form-data; boundary={boundary}", f'multipart/form-data; boundary="{boundary}"'])
    )
    return draw(st.sampled_from([kind, "multipart/form-data", "multipart/form-data; boundary="])), raw


@seeded
@settings(100)
@given(sent=multipart_bodies(), chunk=st.sampled_from([1, 7, 64, 4096]))
def test_any_multipart_body_is_read_or_refused_and_its_task_a_request_or_a_refusal(sent, chunk):
    read = _read_body(*sent, chunk=chunk)
    if read is not None:
        body, uploads = read
        try:
            _fields_or_refusal(body, uploads)
        finally:
            for path in uploads.values():
                path.unlink()


@seeded
@settings(60)
@given(
    kind=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
    raw=st.binary(max_size=64) | JSON_BODIES.map(lambda b: json.dumps(b).encode()),
)
def test_any_json_or_urlencoded_body_is_read_or_refused(kind, raw):
    read = _read_body(kind, raw)
    if read is not None:
        _fields_or_refusal(read[0])


def test_a_json_body_nested_past_the_stack_is_refused():
    """Found by reading what json raises: RecursionError, which the body reader did not catch (a 500)."""
    assert _read_body("application/json", deep()) is None


@pytest.mark.parametrize("field", ["metas", "param_obj"])
def test_a_metadata_string_nested_past_the_stack_is_refused(field):
    assert _fields_or_refusal({field: deep().decode()}) is None


def test_a_model_config_nested_past_the_stack_is_refused_naming_it(tmp_path):
    from mlx_acestep.loading import read_json

    (tmp_path / "config.json").write_bytes(deep())
    with pytest.raises(AceStepError, match="config.json: not valid JSON"):
        read_json(tmp_path / "config.json")
