"""Issue 32's "bad" cases (hostile input, round two): each ended in a traceback, memory exhaustion or a silent wrong
result before its fix; each is now one line naming the problem, found before any work."""

import json
import shutil
from pathlib import Path

import mlx.core as mx
import pytest
from helpers import assert_one_line_error, run_cli

from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component


def test_a_billion_songs_are_refused_before_a_seed_is_drawn(tmp_path, monkeypatch):
    """The seed list was built before the 1..8 check: 20 GB and the OOM killer. The same through a replayed sidecar."""
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli(["generate", "x", "--batch", "1000000000"]), "--batch must be between 1 and 8")
    assert_one_line_error(run_cli(["generate", "x", "--batch", "1000000000", "--seed", "3"]), "--batch")


def _copy(converted, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(converted / name, dst)
    return dst


def test_a_float_weight_stored_as_integers_names_its_key(converted, tmp_path):
    folder = _copy(converted, tmp_path, "vae")
    files = sorted(folder.glob("*.safetensors"))
    weights = dict(mx.load(str(files[0])))
    key = sorted(k for k in weights if k.endswith("weight"))[0]
    weights[key] = weights[key].astype(mx.int32)
    mx.save_safetensors(str(files[0]), weights)
    with pytest.raises(AceStepError, match=rf"tensor '{key}' has dtype mlx.core.int32, expected a floating-point"):
        load_component(folder)


@pytest.mark.parametrize(
    ("name", "key", "value", "expected"),
    [
        ("acestep-v15-turbo", "hidden_size", "big", "a whole number"),
        ("acestep-v15-turbo", "num_hidden_layers", True, "a whole number"),  # JSON true is not 1
        ("acestep-v15-turbo", "layer_types", "all", "a list"),
        ("vae", "decoder_channels", 16.5, "a whole number"),
        ("vae", "downsampling_ratios", [2, "four"], "a list"),
        ("Qwen3-Embedding-0.6B", "hidden_size", "big", "a whole number"),
        ("Qwen3-Embedding-0.6B", "rms_norm_eps", "tiny", "a number"),
    ],
)
def test_a_config_field_of_the_wrong_type_names_the_file_and_field(converted, tmp_path, name, key, value, expected):
    folder = _copy(converted, tmp_path, name)
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AceStepError) as caught:
        load_component(folder)
    assert str(caught.value) == f"{folder / 'config.json'}: '{key}' must be {expected}, got {value!r}"


def _safetensors(path, header: dict, body: bytes = b"") -> None:
    import struct

    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def test_a_shape_whose_size_wraps_around_is_not_an_empty_tensor(tmp_path):
    """2**32 x 2**32 float32 is 2**66 bytes; in int64 the element count wraps to 0 and passed as 0 bytes."""
    from mlx_acestep.safetensors_io import read_header

    entry = {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}
    _safetensors(tmp_path / "a.safetensors", {"w": entry})
    with pytest.raises(AceStepError, match="tensor 'w' has an inconsistent byte range"):
        read_header(tmp_path / "a.safetensors")
    for shape in ([-2, -2], [-1, -1]):  # sizes that multiply to a positive count
        size = 4 * shape[0] * shape[1]
        _safetensors(
            tmp_path / "b.safetensors", {"w": entry | {"shape": shape, "data_offsets": [0, size]}}, b"\0" * size
        )
        with pytest.raises(AceStepError, match="inconsistent byte range"):
            read_header(tmp_path / "b.safetensors")


@pytest.mark.parametrize("start", [b"PK\x03\x04", b"\x80\x02", b"\x80\x04"])
def test_a_pickled_adapter_is_called_a_pickle_and_never_unpickled(tmp_path, start):
    from mlx_acestep.adapters.formats import read_adapter

    path = tmp_path / "adapter.bin"
    path.write_bytes(start + b"\0" * 64)  # torch.save's zip, a bare pickle: neither is read past these bytes
    with pytest.raises(AceStepError, match=r"adapter.bin: a PyTorch pickle \(torch.save\), not safetensors"):
        read_adapter(path, {})


@pytest.mark.parametrize("header_bytes", [640, 896, 1152, 1408 + 65536])
def test_a_safetensors_header_whose_length_begins_like_a_pickle_loads(tmp_path, header_bytes):
    """A header of 640 bytes is b"\x80\x02..." as a length, a pickle's first bytes: the file is still read."""
    import json
    import struct

    import numpy as np

    from mlx_acestep.safetensors_io import read_header

    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (header_bytes - len(header))  # the format pads its header with spaces
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", header_bytes) + header + np.ones(2, np.float32).tobytes())
    entries, _, offset = read_header(path)
    assert list(entries) == ["w"] and offset == 8 + header_bytes


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ({"(unclosed": 8}, r"rank_pattern pattern '\(unclosed' is not a valid regular expression"),
        ({"q_proj": "eight"}, r"rank_pattern\['q_proj'\] must be a positive number, got 'eight'"),
        (["q_proj"], "rank_pattern must be an object of pattern: number, got list"),
    ],
)
def test_peft_patterns_are_checked_when_the_config_is_read(tmp_path, patterns, message):
    from mlx_acestep.adapters.peft import read_config

    file = tmp_path / "adapter_config.json"
    file.write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 8, "rank_pattern": patterns}))
    with pytest.raises(AceStepError, match=message):
        read_config(file)


@pytest.mark.parametrize("tracks", [5, ["drums", 3], {"drums": 1}])
def test_tracks_of_the_wrong_type_are_the_requests_own_error(tracks):
    from mlx_acestep import GenerationRequest
    from mlx_acestep.errors import RequestError

    with pytest.raises(RequestError, match="tracks must be a track name or a list of them"):
        GenerationRequest("x", task="complete", tracks=tracks, src_audio="song.wav")


def test_a_caption_file_is_read_only_as_far_as_the_models_can_use(tmp_path, monkeypatch):
    """/dev/zero was read without end; a file of CJK text cut at the limit keeps whole characters only."""
    import io

    from mlx_acestep.cli.common import read_text_arg
    from mlx_acestep.limits import CHARS_PER_TOKEN, LYRIC_TOKENS, TEXT_FILE_BYTES

    assert TEXT_FILE_BYTES >= 4 * LYRIC_TOKENS * CHARS_PER_TOKEN  # every character the cut keeps, at 4 bytes each
    assert read_text_arg("/dev/zero", "the lyrics") == "\0" * TEXT_FILE_BYTES
    (tmp_path / "long.txt").write_bytes("歌".encode() * (TEXT_FILE_BYTES // 3 + 5))  # 3 bytes a character
    assert read_text_arg(str(tmp_path / "long.txt"), "the lyrics") == "歌" * (TEXT_FILE_BYTES // 3)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"x" * (TEXT_FILE_BYTES + 10))))
    assert read_text_arg("-", "the caption") == "x" * TEXT_FILE_BYTES
    (tmp_path / "bad.txt").write_bytes(b"ok \xff then")
    with pytest.raises(AceStepError, match="bad.txt: cannot read the lyrics"):
        read_text_arg(str(tmp_path / "bad.txt"), "the lyrics")


@pytest.mark.parametrize("output", [".", "..", "-", "sub/", "sub"])
def test_an_output_that_is_a_folder_or_a_dash_is_refused(tmp_path, monkeypatch, output):
    """`-o .` wrote hidden `..wav` / `..json`, `-o -` a file named `-.wav`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    expected = "standard output" if output == "-" else "a folder, not a file name"
    assert_one_line_error(run_cli(["generate", "x", "--model", "tiny", "-o", output]), f"-o {output}: ", expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"] and not any((tmp_path / "sub").iterdir())


def test_a_slow_run_says_its_real_time_factor():
    from mlx_acestep.cli.generate import rtf_text

    assert [rtf_text(r) for r in (12.345, 0.5, 0.1, 0.0042, 0.00031)] == [
        "12.35x",
        "0.50x",
        "0.10x",
        "0.0042x",
        "0.00031x",
    ]


def test_the_record_says_the_quantization_that_ran(converted, tmp_path):
    """A q8-converted folder ran q8 without --quantize; its sidecar said `quantize: none`."""
    from mlx_acestep.checkpoint import Checkpoint
    from mlx_acestep.hub import ModelFolders

    folder = _copy(converted, tmp_path, "acestep-v15-turbo")
    folders = ModelFolders(converted / "Qwen3-Embedding-0.6B", folder, converted / "vae")
    assert Checkpoint(folders).quantize is None
    config = json.loads((folder / "config.json").read_text())
    for bits, name in ((8, "q8"), (4, "q4")):
        config["quantization"] = {"group_size": 64, "bits": bits, "mode": "affine"}  # as the converter writes it
        (folder / "config.json").write_text(json.dumps(config))
        assert Checkpoint(folders).quantize == name


@pytest.mark.parametrize(
    ("value", "alpha", "message"),
    [
        (float("nan"), 16, "holds non-finite values"),
        (float("inf"), 16, "holds non-finite values"),
        (1e30, 16, "holds values up to 1e\\+30"),
        (0.3, 1e30, r"scale \(alpha / rank\) 2.5e\+29 is not a usable number"),  # rank 4
    ],
)
def test_an_adapter_with_unusable_values_is_named_when_it_loads(fixtures, converted, tmp_path, value, alpha, message):
    """They loaded silently, and the DiT stopped after its diffusion with "numerical overflow: try --dtype float32"."""
    from safetensors.numpy import load_file, save_file
    from test_adapters_pipeline import folders, make_adapter

    from mlx_acestep.pipeline import ACEStep

    folder, _ = make_adapter(fixtures, "acestep-v15-turbo", tmp_path / "style", layers=[0])
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    first = sorted(tensors)[0]
    tensors[first][0, 0] = value
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config | {"lora_alpha": alpha}))
    with pytest.raises(AceStepError, match=f"adapter_model.safetensors: .*{message}"):
        ACEStep(folders(converted)).load_lora(folder)


@pytest.mark.parametrize("scale", [1e30, 10.5, -1.0, float("nan")])
def test_a_users_adapter_scale_beyond_ten_is_refused(scale):
    from mlx_acestep.adapters.stack import check_scale

    with pytest.raises(AceStepError, match="must be a number from 0 to 10"):
        check_scale(scale)


def _entry(cache, name="src-vae-0123456789ab"):
    from mlx_acestep.names import CONVERSION_FILE

    entry = cache / "converted" / name
    (entry / "vae").mkdir(parents=True)
    (entry / CONVERSION_FILE).write_text(json.dumps({"source": "src", "components": ["vae"]}))
    return entry


def test_a_cache_entry_in_use_by_another_process_is_not_removed(tmp_path):
    """`cache rm` removed an entry another process was generating from; that run died after its diffusion. The
    same for `--reconvert`, which replaces the entry."""
    import subprocess
    import sys

    from mlx_acestep.cache import cache_key, cached_entry, remove_entries
    from mlx_acestep.convert import ConvertOptions

    src, opts = tmp_path / "src", ConvertOptions()
    (src / "vae").mkdir(parents=True)
    entry = _entry(tmp_path, f"src-vae-{cache_key(src, [src / 'vae'], opts)}")
    hold = f"import sys, pathlib; from mlx_acestep.cache import hold; hold(pathlib.Path({str(entry)!r}))"
    user = subprocess.Popen(  # another run: holds the entry, as a pipeline loading from it does, until told to end
        [sys.executable, "-c", hold + "; print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert user.stdout.readline().strip() == "held"
        with pytest.raises(AceStepError, match=rf"{entry.name}: in use by process {user.pid}; remove it once"):
            remove_entries([entry.name], cache_dir=tmp_path)
        with pytest.raises(AceStepError, match=rf"{entry.name}: in use by process {user.pid}"):
            cached_entry(src, "src-vae", ["vae"], [src / "vae"], opts, tmp_path, True, print)  # --reconvert
        assert entry.is_dir() and (entry / "vae").is_dir()
    finally:
        user.communicate("")  # ends it: its lock goes with it
    assert [name for name, _ in remove_entries([entry.name], cache_dir=tmp_path)] == [entry.name]
    assert not entry.exists()


def test_a_cache_entry_replaced_by_a_link_is_not_used(tmp_path):
    """`list` and `rm` ignored a link in place of an entry, but `generate` loaded whatever it pointed at."""
    from mlx_acestep.cache import cache_key, cached_entry
    from mlx_acestep.convert import ConvertOptions

    elsewhere = _entry(tmp_path / "other")
    src = tmp_path / "src"
    (src / "vae").mkdir(parents=True)
    opts = ConvertOptions()
    link = tmp_path / "cache" / "converted" / f"src-vae-{cache_key(src, [src / 'vae'], opts)}"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    with pytest.raises(AceStepError, match="a link, not a folder the converter wrote"):
        cached_entry(src, "src-vae", ["vae"], [src / "vae"], opts, tmp_path / "cache", False, print)


def test_a_full_disk_is_named_not_libsndfiles_system_error(tmp_path, monkeypatch):
    """libsndfile says "System error." when the disk fills; the user read that and nothing else."""
    import shutil
    from collections import namedtuple

    import numpy as np
    import soundfile as sf

    from mlx_acestep.audio import save_audio

    class Full(sf.SoundFile):
        def write(self, data):
            raise sf.LibsndfileError(0, prefix="Error writing: ")  # what libsndfile raises, its text "System error."

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sf, "SoundFile", Full)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2**30, 2**30, 4096))
    with pytest.raises(OSError, match=f"no space left on {tmp_path}"):
        save_audio(tmp_path / "a.wav", np.zeros((4800, 2), np.float32))
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2**30, 0, 2**30))  # room enough: another failure
    with pytest.raises(OSError) as caught:
        save_audio(tmp_path / "a.wav", np.zeros((4800, 2), np.float32))
    assert "no space" not in str(caught.value)


def test_the_dit_flop_count_is_the_models_own_projections(converted):
    """Issue 33: the estimate behind the slow-run warning counts the decoder's matmul weights; here they are summed
    from the loaded fixture model's linear layers (cross-attention K/V excluded: computed once per run)."""
    import mlx.nn as nn

    from mlx_acestep.pipeline.slow import dit_flops

    model = load_component(converted / "acestep-v15-turbo")
    weights = sum(
        m.weight.size
        for path, m in model.decoder.named_modules()
        if isinstance(m, nn.Linear)
        and path.startswith("layers.")
        and ("attn" in path or "mlp" in path)
        and not path.endswith(("cross_attn.k_proj", "cross_attn.v_proj"))
    )
    seconds, steps, rows = 7.68, 8, 2
    tokens = seconds * 25 / 2  # 25 latent frames a second, two to a token (patch_size 2)
    assert dit_flops(_config(converted), seconds, steps, rows) == pytest.approx(2 * weights * tokens * steps * rows)


def _config(converted):
    from mlx_acestep.models.dit import AceStepConfig

    return AceStepConfig.from_dict(json.loads((converted / "acestep-v15-turbo" / "config.json").read_text()))


def test_a_long_quantized_run_on_the_cpu_backend_is_said_before_it_starts(monkeypatch):
    """A 10 s q8 song took 86 minutes on this CPU without a word (issue 33)."""
    from types import SimpleNamespace

    from mlx_acestep.models.dit import AceStepConfig
    from mlx_acestep.pipeline.slow import slow_run_warning

    real = AceStepConfig()  # the released 2B's sizes (its documented defaults)
    q8 = SimpleNamespace(config=real, dtype=mx.float32, quantize="q8")
    line = slow_run_warning(q8, 30.0, None, 1)
    assert line.startswith("a q8 DiT runs about 40x slower than float32 on MLX's CPU backend") and " min" in line
    assert "about 31 min, about 47 s with a float32 model" in slow_run_warning(q8, 10.0, None, 1)  # the case
    assert slow_run_warning(SimpleNamespace(config=real, dtype=mx.bfloat16, quantize=None), 30.0, None, 1)
    assert slow_run_warning(SimpleNamespace(config=real, dtype=mx.float32, quantize=None), 30.0, None, 1) is None
    assert slow_run_warning(q8, 0.5, 1, 1) is None  # short enough not to matter
    monkeypatch.setattr(mx, "default_device", lambda: mx.gpu)  # Metal / CUDA: nothing to say
    assert slow_run_warning(q8, 30.0, None, 1) is None


# -- slips: tests that compare with an independent computation ---------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "strength", "switch"),
    [  # upstream: cover_steps = int(num_steps * audio_cover_strength), Python floats (turbo :2091, base :1942)
        (100, 0.29, 28),  # 28.999999999999996: truncation, not rounding, gives 28
        (50, 0.57, 28),  # 28.499999999999996
        (10, 0.3, 3),  # 3.0000000000000004
        (8, 0.7, 5),  # 5.6: truncated
        (8, 0.875, 7),
        (8, 0.01, 0),  # below one step: every step follows the caption
        (27, 0.5, 13),
    ],
)
def test_the_cover_switch_step_truncates_as_upstream(steps, strength, switch):
    from mlx_acestep.diffusion.edits import EditHooks

    hooks = EditHooks(switch_fraction=strength, switch_to=("text2music",))
    assert hooks.switch_step(steps) == switch
    assert EditHooks(switch_fraction=1.0, switch_to=("x",)).switch_step(steps) is None  # strength 1: no switch


@pytest.mark.parametrize(
    ("layout", "alpha", "rank", "scale"),
    [  # what each format defines when its optional scale field is absent
        ("comfyui", None, 4, 1.0),  # kohya / ComfyUI: no .alpha means alpha = rank
        ("comfyui", 2.0, 4, 0.5),
        ("lokr", None, 4, 1.0),  # LyCORIS: no alpha, scale 1
        ("lokr", 2.0, 4, 0.5),  # a low-rank factor: alpha / r
    ],
)
def test_an_adapter_without_its_optional_scale_takes_the_formats_own(converted, tmp_path, layout, alpha, rank, scale):
    import numpy as np
    from safetensors.numpy import save_file

    from mlx_acestep.adapters.formats import read_adapter

    config = _config(converted)
    hidden, heads = config.hidden_size, config.num_attention_heads * config.head_dim
    rng = np.random.default_rng(0)
    if layout == "comfyui":
        key = "diffusion_model.layers.0.self_attn.q_proj"
        tensors = {
            f"{key}.lora_down.weight": rng.standard_normal((rank, hidden)).astype(np.float32),
            f"{key}.lora_up.weight": rng.standard_normal((heads, rank)).astype(np.float32),
        }
    else:
        key = "lycoris_layers_0_self_attn_q_proj"
        tensors = {
            f"{key}.lokr_w1": rng.standard_normal((2, 2)).astype(np.float32),
            f"{key}.lokr_w2_a": rng.standard_normal((heads // 2, rank)).astype(np.float32),
            f"{key}.lokr_w2_b": rng.standard_normal((rank, hidden // 2)).astype(np.float32),
        }
    if alpha is not None:
        tensors[f"{key}.alpha"] = np.array(alpha, np.float32)
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata={"algo": "lokr"} if layout == "lokr" else None)
    adapter = read_adapter(tmp_path / "a.safetensors", {"layers.0.self_attn.q_proj": (heads, hidden)})
    assert adapter.deltas["layers.0.self_attn.q_proj"].scale == scale


# -- training (issue 32, bad 3) ----------------------------------------------------------------------------------


def _clip(folder, name="song.wav", seconds=6.0, rate=100):
    """A clip as long as asked at a tiny sample rate: the dataset scan reads lengths, not samples."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(exist_ok=True)
    sf.write(str(folder / name), np.zeros((int(seconds * rate), 1), np.float32), rate, subtype="PCM_16")
    return folder / name


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"song.txt": b"caf\xe9 piano"}, r"song.txt: the caption is not UTF-8 text \(byte 3"),
        ({"song.txt": "piano", "song.lyrics.txt": b"\xff"}, r"song.lyrics.txt: the lyrics is not UTF-8 text"),
        (
            {"metadata.jsonl": '{"file": "song.wav", "caption": "x", "lyrics": ["la", "la"]}\n'},
            r"metadata.jsonl:1: 'lyrics' must be text, got \['la', 'la'\]",
        ),
        (
            {"metadata.jsonl": '\n{"file": "song.wav", "caption": 123}\n'},
            r"metadata.jsonl:2: 'caption' must be text, got 123",
        ),
        ({"metadata.csv": b"file,caption\nsong.wav,caf\xe9\n"}, r"metadata.csv: metadata is not UTF-8 text"),
        ({"metadata.jsonl": '{"file": "song.wav", "caption": "x", "bpm": [120]}\n'}, r"'bpm' must be a number"),
    ],
)
def test_a_datasets_bad_text_names_its_file_and_row(tmp_path, files, message):
    from mlx_acestep.training.dataset import scan_dataset

    _clip(tmp_path)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(AceStepError, match=message):
        scan_dataset(tmp_path)


def test_a_clip_too_long_to_train_on_is_named_before_any_model_loads(tmp_path):
    from mlx_acestep.training.dataset import scan_dataset

    _clip(tmp_path, "long.wav", seconds=700)
    (tmp_path / "long.txt").write_text("piano")
    with pytest.raises(AceStepError, match=r"long.wav: 700 s long; clips must be at most 600 s"):
        scan_dataset(tmp_path)


def test_a_stopped_run_says_whether_a_checkpoint_exists(tmp_path):
    """Ctrl-C said "--resume continues from the last checkpoint" when none existed (5663 steps lost)."""
    from mlx_acestep.training.state import CHECKPOINT_STEP, resume_hint

    assert resume_hint(tmp_path).startswith("no checkpoint was written yet, so nothing can be resumed")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / CHECKPOINT_STEP).write_text('{"step": 40}')
    assert resume_hint(tmp_path) == "the last checkpoint (step 40) is kept: --resume continues from it"


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import errno
    from pathlib import Path
    from types import SimpleNamespace

    from mlx_acestep.training import state
    from mlx_acestep.training.config import TrainConfig

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / state.CHECKPOINT_STEP).write_text('{"step": 40}')
    monkeypatch.setattr("mlx_acestep.adapters.peft.adapter_tensors", lambda stack: {})

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    optimizer = SimpleNamespace(state={})
    with pytest.raises(AceStepError) as caught:
        state.save_checkpoint(folder, None, optimizer, tmp_path / "s.json", 80, TrainConfig(), "tiny", "turbo")
    assert str(caught.value) == (
        f"{folder}: the checkpoint of step 80 could not be written (no space left on the device); "
        "the last checkpoint (step 40) is kept: --resume continues from it"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no half-written folder beside it


def test_a_full_disk_under_mlxs_own_write_is_named_though_the_cleanup_frees_space(tmp_path, monkeypatch):
    """MLX's save error has no errno; once the half-written staging folder is removed the disk has room again, so
    the space must be judged before that cleanup."""
    import shutil
    from collections import namedtuple
    from types import SimpleNamespace

    from mlx_acestep.training import state
    from mlx_acestep.training.config import TrainConfig

    monkeypatch.setattr("mlx_acestep.adapters.peft.adapter_tensors", lambda stack: {})

    def filling(path, arrays):
        Path(path).write_bytes(b"\0" * 1024)  # what fitted before the disk was full
        raise RuntimeError("[save_safetensors] Failed to write to file")

    usage = namedtuple("usage", "total used free")
    staged = lambda: any(tmp_path.rglob("optimizer.safetensors"))  # noqa: E731
    monkeypatch.setattr(state.mx, "save_safetensors", filling)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**30, 2**30, 0 if staged() else 2**29))
    with pytest.raises(AceStepError, match=r"could not be written \(no space left on the device\)"):
        state.save_checkpoint(
            tmp_path / "checkpoint", None, SimpleNamespace(state={}), tmp_path / "s.json", 3, TrainConfig(), "m", "d"
        )
    assert list(tmp_path.iterdir()) == []  # nothing half-written left


def test_a_converted_model_with_nan_weights_is_named_not_called_an_overflow(converted, tmp_path):
    """The DiT stopped with "numerical overflow: try --dtype float32, or another seed": neither would help."""
    from mlx_acestep.pipeline import ACEStep, ModelFolders

    folder = _copy(converted, tmp_path, "acestep-v15-turbo")
    path = sorted(folder.glob("*.safetensors"))[0]
    weights = dict(mx.load(str(path)))
    key = "decoder.norm_out.weight" if "decoder.norm_out.weight" in weights else sorted(weights)[-1]
    weights[key] = mx.full(weights[key].shape, float("nan"), weights[key].dtype)
    mx.save_safetensors(str(path), weights)
    pipe = ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", folder, converted / "vae"))
    with pytest.raises(AceStepError) as caught:
        pipe.generate("x", duration=1.0, seed=1, thinking=False)
    assert str(caught.value) == (
        f"the diffusion (DiT) phase produced NaN or infinite values: the model's weights hold some ({path}: "
        f"'{key}'); the converted model is damaged: convert it again; nothing was written"
    )


def test_a_run_with_an_adapter_and_non_default_options_replays_bit_for_bit(fixtures, converted, tmp_path, monkeypatch):
    """Slip check: a flag the sidecar forgets (or records under another name) replays as its default. Every value
    given is looked for in the replay section by its flag's name, and the replay must be the same file."""
    import numpy as np
    import soundfile as sf
    from test_adapters_pipeline import make_adapter

    adapter, _ = make_adapter(fixtures, "acestep-v15-turbo", tmp_path / "style", layers=[0])
    monkeypatch.chdir(tmp_path)
    given = {
        "steps": 6,
        "shift": 2.0,
        "sampler": "heun",
        "velocity_norm_threshold": 2.5,
        "velocity_ema_factor": 0.2,
        "retake_variance": 0.3,
        "retake_seed": 11,
        "dcw_mode": "low",
        "dcw_scaler": 0.05,
        "dcw_wavelet": "db2",
        "bpm": 100,
        "keyscale": "C major",  # by the name the replay records: --key's parameter is keyscale
        "time_signature": "3",
        "language": "fr",
        "lyrics": "[verse]\nla la",
    }
    args = ["generate", "rain", "-m", converted, "--duration", 2, "--seed", 5, "--no-normalize", "--no-thinking"]
    for name, value in given.items():
        args += ["--key" if name == "keyscale" else f"--{name.replace('_', '-')}", value]
    first = run_cli([*args, "--lora", f"{adapter}:0.7", "-o", "a.flac"])
    assert first.returncode == 0, first.output
    replay = json.loads((tmp_path / "a.json").read_text())["replay"]
    for name, value in given.items():
        assert str(replay.get(name)) == str(value), (name, replay.get(name))
    assert replay["no_normalize"] is True and replay["loras"] == [f"{adapter}:0.7"]
    again = run_cli(["generate", "--from-metadata", "a.json", "-o", "b.flac"])
    assert again.returncode == 0, again.output
    a, b = (sf.read(str(tmp_path / n))[0] for n in ("a.flac", "b.flac"))
    assert a.shape == b.shape and np.array_equal(a, b)
