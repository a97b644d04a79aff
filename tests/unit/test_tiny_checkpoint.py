"""The tiny random-weight checkpoint root (`mlx_acestep.tiny`) behind `--model tiny`.

It must look like the real upstream root to every reader: the same key names and
shapes as the parity fixtures (which the upstream savers wrote), strict loads into
the live references (diffusers' ACE-Step modules and Oobleck, transformers' Qwen3),
our own converter and loader, and numbers that stay finite through the models.
"""

import filecmp
import json
from fnmatch import fnmatch
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import tomllib
from helpers import require

from mlx_acestep import tiny
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component, load_silence_latent
from mlx_acestep.safetensors_io import read_header, read_safetensors

REPO = Path(__file__).resolve().parents[2]
DIT_DIRS = (tiny.TURBO_DIR, tiny.BASE_DIR)
WEIGHT_FILES = {  # folder -> its weight files
    tiny.VAE_DIR: ("diffusion_pytorch_model.safetensors",),
    tiny.TURBO_DIR: ("model.safetensors", "silence_latent.safetensors"),
    tiny.BASE_DIR: ("model.safetensors", "silence_latent.safetensors"),
    tiny.TEXT_ENCODER_DIR: ("model.safetensors",),
    tiny.LM_DIR: ("model.safetensors",),
}
TOKENIZER_DIRS = (tiny.TEXT_ENCODER_DIR, tiny.LM_DIR)
# Compared as JSON: they name the library version that wrote them.
CONFIG_FILES = ("config.json", "generation_config.json")
SILENCE_FRAMES = 15000  # the real silence_latent.pt's length, which diffusers' condition encoder also allocates


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoints", seed=0)


@pytest.fixture(scope="module")
def converted(root, tmp_path_factory):
    from mlx_acestep.convert import convert_checkpoints

    dst = tmp_path_factory.mktemp("tiny_mlx") / "mlx"
    return dst, convert_checkpoints(root, dst)


def header_shapes(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    header, _, _ = read_header(path)
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items()}


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# 1. The same layout as the fixture checkpoints.


def test_same_files_as_the_fixture_root(root, fixtures):
    assert files_under(root) == files_under(fixtures / "checkpoints")


@pytest.mark.parametrize("folder,name", [(f, n) for f, names in WEIGHT_FILES.items() for n in names])
def test_keys_and_shapes_match_fixture(root, fixtures, folder, name):
    ours, ref = header_shapes(root / folder / name), header_shapes(fixtures / "checkpoints" / folder / name)
    if name == "silence_latent.safetensors":  # the fixture keeps 1000 frames, the real file (and ours) 15000
        assert ours["silence_latent"] == ("F32", (1, 64, SILENCE_FRAMES))
        ours = {k: (d, s[:-1]) for k, (d, s) in ours.items()}
        ref = {k: (d, s[:-1]) for k, (d, s) in ref.items()}
    assert ours == ref


@pytest.mark.parametrize("folder,name", [(f, "config.json") for f in WEIGHT_FILES] + [(tiny.LM_DIR, CONFIG_FILES[1])])
def test_configs_match_fixture(root, fixtures, folder, name):
    ours = json.loads((root / folder / name).read_text())
    ref = json.loads((fixtures / "checkpoints" / folder / name).read_text())
    version_fields = {"transformers_version", "_diffusers_version"}  # which library wrote the file
    assert {k: v for k, v in ours.items() if k not in version_fields} == {
        k: v for k, v in ref.items() if k not in version_fields
    }


@pytest.mark.parametrize("folder", TOKENIZER_DIRS)
def test_tokenizer_files_equal_fixture(root, fixtures, folder):
    """The LM tokenizer is derived from the shipped text tokenizer; it must come out as the fixture's, byte for byte."""
    names = [n for n in files_under(root / folder) if not n.endswith(".safetensors") and n not in CONFIG_FILES]
    assert {"tokenizer.json", "tokenizer_config.json", "added_tokens.json"} <= set(names)
    for name in names:
        assert filecmp.cmp(root / folder / name, fixtures / "checkpoints" / folder / name, shallow=False), name


def test_package_data_lists_every_asset():
    """A non-editable install only ships what pyproject's package-data globs match."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mlx_acestep"]
    package = REPO / "mlx_acestep"
    assets = [str(p.relative_to(package)) for p in (package / "assets").rglob("*") if p.is_file()]
    assert assets
    assert [a for a in assets if not any(fnmatch(a, g) for g in globs)] == []


# 2. Strict loads into the live references.


def diffusers_dit_modules(folder: Path) -> dict:
    """diffusers' four ACE-Step modules loaded strictly from an original-layout DiT folder (DIFFUSERS-MAPPING 1.2)."""
    import torch
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from helpers import ATTENTION_RENAMES, DIFFUSERS_PREFIXES, PATCH_RENAMES, _init_args, rename_segments

    config = json.loads((folder / "config.json").read_text())
    state = read_safetensors(folder / "model.safetensors")
    silence = read_safetensors(folder / "silence_latent.safetensors")["silence_latent"]
    classes = {
        "transformer": AceStepTransformer1DModel,
        "condition_encoder": AceStepConditionEncoder,
        "audio_tokenizer": AceStepAudioTokenizer,
        "audio_token_detokenizer": AceStepAudioTokenDetokenizer,
    }
    to_diffusers = {original: ours for ours, original in PATCH_RENAMES.items()}
    modules, used = {}, 0
    for name, cls in classes.items():
        prefix = DIFFUSERS_PREFIXES[name]
        mapped = {
            rename_segments(rename_segments(k[len(prefix) :], ATTENTION_RENAMES), to_diffusers): torch.tensor(v)
            for k, v in state.items()
            if k.startswith(prefix)
        }
        used += len(mapped)
        if name == "condition_encoder":
            mapped["null_condition_emb"] = torch.tensor(state["null_condition_emb"])
            # diffusers allocates this buffer at 15000 frames: loads strictly only because ours is the real length.
            mapped["silence_latent"] = torch.tensor(silence).transpose(1, 2).contiguous()
            used += 1
        module = cls(**_init_args(cls, config, encoder_side=name != "transformer")).eval()
        module.load_state_dict(mapped, strict=True)
        modules[name] = module
    assert used == len(state), "keys outside the four prefixes"
    return modules


@pytest.mark.live
@pytest.mark.parametrize("folder", DIT_DIRS)
def test_dit_loads_strictly_into_diffusers(root, folder):
    require("diffusers")
    modules = diffusers_dit_modules(root / folder)
    assert modules["transformer"].config.is_turbo == (folder == tiny.TURBO_DIR)


def loaded_state(cls, folder: Path) -> dict:
    """`cls.from_pretrained(folder)`'s state dict, after checking nothing was missing, unexpected or mis-shaped."""
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    return model.state_dict()


def assert_state_equals_file(state: dict, file: Path, extra: set[str] = frozenset()) -> None:
    """Every tensor of `file` is in the loaded model with its value; the model holds nothing else but `extra`."""
    ours = read_safetensors(file)
    assert set(state) - extra == set(ours)
    for k, v in ours.items():
        np.testing.assert_array_equal(state[k].detach().numpy(), v, err_msg=k)


@pytest.mark.live
def test_vae_loads_strictly_into_diffusers(root):
    diffusers = require("diffusers")
    state = loaded_state(diffusers.AutoencoderOobleck, root / tiny.VAE_DIR)
    assert_state_equals_file(state, root / tiny.VAE_DIR / "diffusion_pytorch_model.safetensors")


@pytest.mark.live
def test_qwen3_models_load_strictly_into_transformers(root):
    transformers = require("transformers")
    state = loaded_state(transformers.Qwen3Model, root / tiny.TEXT_ENCODER_DIR)
    assert_state_equals_file(state, root / tiny.TEXT_ENCODER_DIR / "model.safetensors")

    state = loaded_state(transformers.Qwen3ForCausalLM, root / tiny.LM_DIR)
    assert_state_equals_file(state, root / tiny.LM_DIR / "model.safetensors", extra={"lm_head.weight"})
    np.testing.assert_array_equal(state["lm_head.weight"].numpy(), state["model.embed_tokens.weight"].numpy())


@pytest.mark.live
def test_tokenizers_load_and_map_audio_codes(root, fixtures):
    transformers = require("transformers")
    text = transformers.AutoTokenizer.from_pretrained(root / tiny.TEXT_ENCODER_DIR)
    lm = transformers.AutoTokenizer.from_pretrained(root / tiny.LM_DIR)
    ref = transformers.AutoTokenizer.from_pretrained(fixtures / "checkpoints" / tiny.LM_DIR)
    assert len(text) == 538 and len(lm) == len(ref) == 538 + tiny.NUM_AUDIO_CODES

    codes = [f"<|audio_code_{i}|>" for i in range(tiny.NUM_AUDIO_CODES)]
    want = list(range(538, 538 + tiny.NUM_AUDIO_CODES))
    assert lm.convert_tokens_to_ids(codes) == want
    # Loaders (transformers, tokenizers) renumber added tokens by position, so check the ids the files declare too.
    fast = json.loads((root / tiny.LM_DIR / "tokenizer.json").read_text())["added_tokens"]
    assert [t["id"] for t in fast if t["content"].startswith("<|audio_code_")] == want
    assert [json.loads((root / tiny.LM_DIR / "added_tokens.json").read_text())[c] for c in codes] == want
    sample = "<|im_start|>user\nCaption: héllo wörld<|im_end|>\n<|audio_code_0|><|audio_code_7|><|audio_code_2047|>"
    ids = lm(sample).input_ids
    assert ids == ref(sample).input_ids
    assert ids[-3:] == [538, 545, 538 + 2047]
    assert text(sample).input_ids[:4] == ids[:4]  # the shared vocabulary encodes alike


# 3. Our converter and loader, and finite, non-trivial numbers.


def test_converter_converts_every_component(root, converted):
    _, report = converted
    assert sorted(name for name, _ in report.converted) == sorted(
        [tiny.VAE_DIR, *DIT_DIRS, tiny.TEXT_ENCODER_DIR, tiny.LM_DIR]
    )
    assert report.skipped == []


def assert_lively(x: mx.array, shape: tuple[int, ...]) -> None:
    a = np.array(x)
    assert a.shape == shape
    assert np.isfinite(a).all()
    assert 0.05 < a.std() < 20, a.std()


def test_vae_decodes_finite_audio(converted):
    vae = load_component(converted[0] / tiny.VAE_DIR)
    latents = mx.array(np.random.default_rng(1).standard_normal((1, 50, 64)).astype(np.float32))
    audio = vae.decode(latents)
    assert_lively(audio, (1, 50 * 1920, 2))
    assert_lively(vae.encode_moments(audio[:, : 10 * 1920])[0], (1, 10, 64))  # the encoder is slow on CPU: 10 frames


def test_text_encoder_and_dit_give_finite_outputs(converted):
    dst = converted[0]
    rng = np.random.default_rng(2)
    text_encoder = load_component(dst / tiny.TEXT_ENCODER_DIR)
    text = text_encoder(mx.array(rng.integers(0, 538, (1, 12))))
    assert_lively(text, (1, 12, 32))
    lyrics = text_encoder.embed(mx.array(rng.integers(0, 538, (1, 20))))

    for folder in DIT_DIRS:
        dit = load_component(dst / folder)
        silence = load_silence_latent(dst / folder)
        assert silence.shape == (1, SILENCE_FRAMES, 64)
        states, _ = dit.encoder(
            text,
            mx.ones((1, 12), dtype=mx.bool_),
            lyrics,
            mx.ones((1, 20), dtype=mx.bool_),
            silence[:, :30],
            mx.array([0]),
        )
        assert_lively(states, (1, 20 + 1 + 12, 64))
        frames = 24
        x = mx.array(rng.standard_normal((1, frames, 64)).astype(np.float32))
        context = mx.concatenate([silence[:, :frames], mx.ones((1, frames, 64))], axis=-1)
        t = mx.array([0.7])
        velocity = dit.decoder(x, t, t, context, dit.decoder.cross_key_values(states))
        assert_lively(velocity, (1, frames, 64))


# 4. Determinism and atomic writing.


def test_same_seed_gives_identical_files(root, tmp_path):
    again = tiny.build_tiny_checkpoint(tmp_path / "again", seed=0)
    names = files_under(root)
    assert files_under(again) == names
    _, mismatch, errors = filecmp.cmpfiles(root, again, names, shallow=False)
    assert mismatch == [] and errors == []


def test_other_seed_gives_other_weights(root, tmp_path):
    other = tiny.build_tiny_checkpoint(tmp_path / "other", seed=1)
    for folder, names in WEIGHT_FILES.items():
        for name in names:
            ours, theirs = read_safetensors(root / folder / name), read_safetensors(other / folder / name)
            same = [k for k in ours if np.array_equal(ours[k], theirs[k])]
            assert same == [], f"{folder}/{name}: {same[:3]}"


def test_turbo_and_base_differ_but_share_the_silence_latent(root):
    turbo, base = (read_safetensors(root / d / "model.safetensors") for d in DIT_DIRS)
    assert not np.array_equal(turbo["null_condition_emb"], base["null_condition_emb"])
    turbo_silence, base_silence = (root / d / "silence_latent.safetensors" for d in DIT_DIRS)
    assert filecmp.cmp(turbo_silence, base_silence, shallow=False)


def test_refuses_a_non_empty_root(tmp_path):
    dst = tmp_path / "root"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(AceStepError, match="not an empty folder") as e:
        tiny.build_tiny_checkpoint(dst)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert files_under(dst) == ["keep.txt"]


def test_refuses_a_file_and_a_negative_seed(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(AceStepError):
        tiny.build_tiny_checkpoint(tmp_path / "file")
    with pytest.raises(AceStepError, match="seed"):
        tiny.build_tiny_checkpoint(tmp_path / "new", seed=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_fills_an_empty_folder(tmp_path):
    (tmp_path / "root").mkdir()
    assert tiny.build_tiny_checkpoint(tmp_path / "root") == tmp_path / "root"
    assert (tmp_path / "root" / tiny.VAE_DIR / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    def broken():  # called after the VAE and both DiTs are written
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tiny, "text_tokenizer_files", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        tiny.build_tiny_checkpoint(tmp_path / "root")
    assert list(tmp_path.iterdir()) == []


def test_script_writes_a_root(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tiny_checkpoint", REPO / "scripts" / "make_tiny_checkpoint.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # in-process: a subprocess would spend seconds importing MLX
    dst = tmp_path / "root"
    assert script.main([str(dst), "--seed", "3"]) == 0
    assert f"{tiny.VAE_DIR}/diffusion_pytorch_model.safetensors" in capsys.readouterr().out
    assert (dst / tiny.LM_DIR / "tokenizer.json").is_file()
    assert script.main([str(dst)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
