"""The converter on diffusers pipeline folders (DIFFUSERS-MAPPING §1-2), built with the live diffusers 0.42.1 classes.

The reference is the original layout: the fixture checkpoints, moved into diffusers' own modules by the spec's
mapping and written with `save_pretrained`, must convert to the same folders and the same tensors.
"""

import json
import shutil
from dataclasses import asdict

import mlx.core as mx
import numpy as np
import pytest
from helpers import (
    ATTENTION_RENAMES,
    DIFFUSERS_PREFIXES,
    PATCH_RENAMES,
    _init_args,
    diffusers_dit_checkpoint,
    rename_segments,
    require,
)
from mlx.utils import tree_flatten
from safetensors.numpy import load_file

from mlx_acestep.conditioning.prompts import PromptTokenizer
from mlx_acestep.convert import convert_checkpoints
from mlx_acestep.convert.diffusers_layout import original_state
from mlx_acestep.convert.diffusers_layout import rename_segments as undo_segments
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component, load_silence_latent
from mlx_acestep.models.dit import AceStepConfig

TEXT_ENCODER = "Qwen3-Embedding-0.6B"
OPTIONAL = ("audio_tokenizer", "audio_token_detokenizer")
WEIGHTS = "diffusion_pytorch_model.safetensors"
TO_DIFFUSERS_PATCH = {b: a for a, b in PATCH_RENAMES.items()}
# What the converter adds to the model's own fields in config.json.
BOOKKEEPING = {"component", "layout_version", "dtype", "quantization", "absent_parts"}


# --- building diffusers folders with diffusers itself ------------------------------------------------


def module_classes():
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )

    return {
        "transformer": AceStepTransformer1DModel,
        "condition_encoder": AceStepConditionEncoder,
        "audio_tokenizer": AceStepAudioTokenizer,
        "audio_token_detokenizer": AceStepAudioTokenDetokenizer,
    }


def diffusers_modules(config: dict, state: dict, silence):
    """The four diffusers modules loaded strictly from an original-layout state dict (rules 1-4 forwards)."""
    import torch

    modules = {}
    for name, cls in module_classes().items():
        module = cls(**_init_args(cls, config, encoder_side=name != "transformer")).eval()
        prefix = DIFFUSERS_PREFIXES[name]
        mapped = {
            rename_segments(rename_segments(k[len(prefix) :], ATTENTION_RENAMES), TO_DIFFUSERS_PATCH): torch.from_numpy(
                v
            )
            for k, v in state.items()
            if k.startswith(prefix)
        }
        if name == "condition_encoder":
            mapped["null_condition_emb"] = torch.from_numpy(state["null_condition_emb"])
            module.silence_latent = (
                torch.from_numpy(silence).transpose(1, 2).contiguous()
            )  # re-registered at its length
            mapped["silence_latent"] = module.silence_latent
        module.load_state_dict(mapped, strict=True)
        modules[name] = module
    return modules


def save_pipeline(root, modules: dict, dtype=None, shard_transformer=False):
    """`save_pretrained` each module, plus model_index.json and the scheduler, as a diffusers pipeline folder."""
    import diffusers

    for name, module in modules.items():
        module = module.to(dtype) if dtype is not None else module
        module.save_pretrained(
            root / name, max_shard_size="500KB" if shard_transformer and name == "transformer" else "10GB"
        )
    diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0).save_pretrained(root / "scheduler")
    index = {
        "_class_name": "AceStepPipeline",
        "_diffusers_version": diffusers.__version__,
        **{name: ["diffusers", type(m).__name__] for name, m in modules.items()},
        "vae": ["diffusers", "AutoencoderOobleck"],
        "text_encoder": ["transformers", "Qwen3Model"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))


def build_root(fixtures, root, variant: str, dtype=None):
    """The fixture checkpoints of `variant` as a diffusers pipeline folder (transformer sharded, as large ones are)."""
    from transformers import Qwen3Model

    from mlx_acestep.convert.kinds import TOKENIZER_FILES

    ckpt = fixtures / "checkpoints"
    dit = ckpt / f"acestep-v15-{variant}"
    config = json.loads((dit / "config.json").read_text())
    silence = load_file(str(dit / "silence_latent.safetensors"))["silence_latent"]
    save_pipeline(
        root,
        diffusers_modules(config, load_file(str(dit / "model.safetensors")), silence),
        dtype,
        shard_transformer=True,
    )
    shutil.copytree(ckpt / "vae", root / "vae")
    Qwen3Model.from_pretrained(str(ckpt / TEXT_ENCODER)).save_pretrained(str(root / "text_encoder"))
    (root / "tokenizer").mkdir()
    for name in TOKENIZER_FILES:
        if (ckpt / TEXT_ENCODER / name).is_file():
            shutil.copy(ckpt / TEXT_ENCODER / name, root / "tokenizer" / name)
    return root


@pytest.fixture(scope="session")
def diffusers_root(fixtures, tmp_path_factory):
    """Build (once per session) the fixture `variant` as a diffusers folder, float32 or "bfloat16"."""
    require("torch")
    require("diffusers")
    import torch

    built = {}

    def build(variant="turbo", dtype="float32"):
        if (variant, dtype) not in built:
            root = tmp_path_factory.mktemp(f"diffusers_{variant}_{dtype}") / "pipeline"
            built[variant, dtype] = build_root(
                fixtures, root, variant, None if dtype == "float32" else getattr(torch, dtype)
            )
        return built[variant, dtype]

    return build


@pytest.fixture
def writable_root(diffusers_root, tmp_path):
    """A copy of the float32 turbo folder to damage, under `tmp_path/src`."""
    return shutil.copytree(diffusers_root(), tmp_path / "src")


def rewrite_weights(folder, edit):
    """Apply `edit(key) -> new key or None (drop)` to every tensor of a diffusers model folder, shards included."""
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file

    for path in folder.glob("*.safetensors"):
        state = {edit(k): v for k, v in load_torch(str(path)).items() if edit(k) is not None}
        save_file(state, str(path), metadata={"format": "pt"})
    index = folder / f"{WEIGHTS}.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {edit(k): f for k, f in data["weight_map"].items() if edit(k) is not None}
        index.write_text(json.dumps(data))


def params(folder) -> dict:
    return {k: np.array(v) for k, v in tree_flatten(load_component(folder).parameters())}


def assert_same_params(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == np.float32, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def fixture_silence(fixtures, variant="turbo"):
    """The shipped silence latent, channel-last `[1, T, C]`."""
    path = fixtures / "checkpoints" / f"acestep-v15-{variant}" / "silence_latent.safetensors"
    return load_file(str(path))["silence_latent"].transpose(0, 2, 1)


def assert_one_line_failure(root, dst, match):
    with pytest.raises(AceStepError, match=match) as e:
        convert_checkpoints(root, dst)
    assert "\n" not in str(e.value)
    assert not dst.exists() and not list(dst.parent.glob(f".{dst.name}.*"))  # nothing half-written


# --- the remap on hand-made keys -------------------------------------------------------------------


def test_segment_renames_touch_whole_segments_only():
    cases = {
        "layers.0.self_attn.to_q.weight": "layers.0.self_attn.q_proj.weight",
        "layers.3.cross_attn.to_out.0.weight": "layers.3.cross_attn.o_proj.weight",
        "lyric_encoder.layers.1.self_attn.norm_k.weight": "lyric_encoder.layers.1.self_attn.k_norm.weight",
        "proj_in_conv.bias": "proj_in.1.bias",
        "norm_out.weight": "norm_out.weight",
        "layers.0.self_attn.to_qx.weight": "layers.0.self_attn.to_qx.weight",
        "layers.0.to_out.1.weight": "layers.0.to_out.1.weight",
    }
    table = {"to_q": "q_proj", "to_out.0": "o_proj", "norm_k": "k_norm", "proj_in_conv": "proj_in.1"}
    assert {k: undo_segments(k, table) for k in cases} == cases


def test_original_state_restores_prefixes_and_null_condition():
    x = mx.zeros((1,))
    states = {
        "transformer": {"proj_out_conv.weight": x, "layers.0.cross_attn.to_v.weight": x},
        "condition_encoder": {"null_condition_emb": x, "timbre_encoder.special_token": x},
        "audio_token_detokenizer": {"layers.1.self_attn.norm_q.weight": x},
    }
    got = original_state(states, {"to_v": "v_proj", "norm_q": "q_norm"})
    assert set(got) == {
        "decoder.proj_out.1.weight",
        "decoder.layers.0.cross_attn.v_proj.weight",
        "null_condition_emb",
        "encoder.timbre_encoder.special_token",
        "detokenizer.layers.1.self_attn.q_norm.weight",
    }


# --- whole pipelines -------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.parametrize("variant", ["turbo", "base"])
def test_diffusers_root_converts_like_the_original(diffusers_root, converted, fixtures, tmp_path, variant):
    root = diffusers_root(variant)
    assert (root / "transformer" / f"{WEIGHTS}.index.json").is_file()  # the sharded path is exercised
    convert_checkpoints(root, tmp_path / "out")
    dit = f"acestep-v15-{variant}"
    names = {p.name for p in (tmp_path / "out").iterdir() if p.is_dir()}
    assert names == {"vae", TEXT_ENCODER, dit} and names <= {p.name for p in converted.iterdir()}
    for name in names:
        assert_same_params(params(tmp_path / "out" / name), params(converted / name))

    original = json.loads((fixtures / "checkpoints" / dit / "config.json").read_text())
    rebuilt = json.loads((tmp_path / "out" / dit / "config.json").read_text())
    assert {k: v for k, v in rebuilt.items() if k not in BOOKKEEPING} == {
        k: original[k] for k in rebuilt if k not in BOOKKEEPING
    }
    assert asdict(AceStepConfig.from_dict(rebuilt)) == asdict(AceStepConfig.from_dict(original))
    assert "absent_parts" not in rebuilt
    np.testing.assert_array_equal(
        np.array(load_silence_latent(tmp_path / "out" / dit)), fixture_silence(fixtures, variant)
    )

    ids = mx.array([[3, 17, 200, 5]])
    want_encoder, got_encoder = (
        load_component(converted / TEXT_ENCODER),
        load_component(tmp_path / "out" / TEXT_ENCODER),
    )
    np.testing.assert_array_equal(np.array(got_encoder(ids)), np.array(want_encoder(ids)))  # config (RoPE) carried too
    text = ["a calm piano ballad", "drums"]
    for got, want in zip(
        PromptTokenizer(tmp_path / "out" / TEXT_ENCODER).batch(text, 64),
        PromptTokenizer(fixtures / "checkpoints" / TEXT_ENCODER).batch(text, 64),
    ):
        np.testing.assert_array_equal(got, want)


@pytest.mark.live
def test_only_picks_components_by_their_output_names(diffusers_root, tmp_path):
    report = convert_checkpoints(diffusers_root(), tmp_path / "out", only=["acestep-v15-turbo"])
    assert [name for name, _ in report.converted] == ["acestep-v15-turbo"]
    manifest = json.loads((tmp_path / "out" / "acestep-v15-turbo" / "manifest.json").read_text())
    assert {"model_index.json", "condition_encoder/config.json", "vae/config.json"} <= set(manifest["sources"])


@pytest.mark.live
def test_bfloat16_folder_gives_a_float32_silence_latent(diffusers_root, converted, fixtures, tmp_path):
    import torch

    convert_checkpoints(diffusers_root("turbo", "bfloat16"), tmp_path / "out", only=["acestep-v15-turbo"])
    got = np.array(load_silence_latent(tmp_path / "out" / "acestep-v15-turbo"))
    want = torch.from_numpy(fixture_silence(fixtures)).to(torch.bfloat16).float().numpy()
    assert got.dtype == np.float32 and not np.array_equal(want, fixture_silence(fixtures))  # rounding did happen
    np.testing.assert_array_equal(got, want)
    rounded = {
        k: torch.from_numpy(v).to(torch.bfloat16).float().numpy()
        for k, v in params(converted / "acestep-v15-turbo").items()
    }
    assert_same_params(params(tmp_path / "out" / "acestep-v15-turbo"), rounded)


@pytest.mark.live
def test_middle_revision_converts_without_the_audio_tokenizer(writable_root, converted, tmp_path):
    """q_proj attention names left in place, no audio_tokenizer/ or audio_token_detokenizer/ (§1.4)."""
    original_names = {b: a for a, b in ATTENTION_RENAMES.items()}
    for name in ("transformer", "condition_encoder"):
        rewrite_weights(writable_root / name, lambda k: rename_segments(k, original_names))
    for name in OPTIONAL:
        shutil.rmtree(writable_root / name)
    index = json.loads((writable_root / "model_index.json").read_text())
    (writable_root / "model_index.json").write_text(json.dumps({k: v for k, v in index.items() if k not in OPTIONAL}))
    assert "to_q" not in (writable_root / "condition_encoder" / WEIGHTS).read_bytes().decode("latin-1")

    convert_checkpoints(writable_root, tmp_path / "out")
    folder = tmp_path / "out" / "acestep-v15-turbo"
    assert json.loads((folder / "config.json").read_text())["absent_parts"] == ["tokenizer", "detokenizer"]
    want = {
        k: v
        for k, v in params(converted / "acestep-v15-turbo").items()
        if not k.startswith(("tokenizer.", "detokenizer."))
    }
    assert_same_params(params(folder), want)
    model = load_component(folder)
    with pytest.raises(AceStepError, match=r"loaded without tokenizer, detokenizer"):
        model.codes_to_hints(mx.zeros((1, 4), mx.int32))


def oldest_class(root):
    path = root / "transformer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "_class_name": "AceStepDiTModel"}))


def no_null_condition(root):
    rewrite_weights(root / "condition_encoder", lambda k: None if k == "null_condition_emb" else k)


@pytest.mark.live
@pytest.mark.parametrize("damage", [oldest_class, no_null_condition])
def test_oldest_revision_is_refused_in_one_line(writable_root, tmp_path, damage):
    damage(writable_root)
    assert_one_line_failure(writable_root, tmp_path / "out", r"oldest diffusers converter.*cannot be used for sampling")


@pytest.mark.live
def test_missing_silence_latent_is_named_and_leaves_nothing(writable_root, tmp_path):
    rewrite_weights(writable_root / "condition_encoder", lambda k: None if k == "silence_latent" else k)
    assert_one_line_failure(writable_root, tmp_path / "out", r"no silence latent \(neither .*silence_latent\.pt")


@pytest.mark.live
def test_root_silence_latent_pt_is_the_fallback(writable_root, fixtures, tmp_path):
    import torch

    rewrite_weights(writable_root / "condition_encoder", lambda k: None if k == "silence_latent" else k)
    want = fixture_silence(fixtures)[:, :900]  # any length
    torch.save(torch.from_numpy(want.transpose(0, 2, 1).copy()), writable_root / "silence_latent.pt")  # channel-first
    convert_checkpoints(writable_root, tmp_path / "out", only=["acestep-v15-turbo"])
    np.testing.assert_array_equal(np.array(load_silence_latent(tmp_path / "out" / "acestep-v15-turbo")), want)


@pytest.mark.live
def test_missing_weight_is_named_in_its_diffusers_folder(writable_root, tmp_path):
    rewrite_weights(writable_root / "transformer", lambda k: None if k == "layers.1.cross_attn.to_out.0.weight" else k)
    assert_one_line_failure(
        writable_root, tmp_path / "out", r"missing key 'layers\.1\.cross_attn\.to_out\.0\.weight' in transformer/"
    )


@pytest.mark.live
def test_xl_encoder_widths_are_rebuilt(tmp_path):
    """XL: the condition side narrower than the DiT; the original config names its four widths."""
    require("diffusers")
    from test_dit import XL_CONFIG

    modules = diffusers_dit_checkpoint(XL_CONFIG, tmp_path / "original" / "acestep-v15-turbo", seed=3)
    save_pipeline(tmp_path / "pipeline", {k: v for k, v in modules.items() if k != "silence_latent"})
    convert_checkpoints(tmp_path / "original", tmp_path / "want")
    convert_checkpoints(tmp_path / "pipeline", tmp_path / "got")
    folder = tmp_path / "got" / "acestep-v15-base"  # the helper's modules are not turbo
    rebuilt = json.loads((folder / "config.json").read_text())
    assert (
        AceStepConfig.from_dict(rebuilt) == AceStepConfig.from_dict(XL_CONFIG)
        and AceStepConfig.from_dict(rebuilt).is_xl
    )
    assert_same_params(params(folder), params(tmp_path / "want" / "acestep-v15-turbo"))


@pytest.mark.live
def test_a_diffusers_folder_generates_the_same_song_as_the_original_root(diffusers_root, converted, tmp_path):
    """`--model <diffusers folder>`: converted once into the cache, then the pipeline as for the original layout."""
    from mlx_acestep.pipeline import ACEStep, ModelFolders

    pipe = ACEStep.from_pretrained(diffusers_root("turbo"), cache_dir=tmp_path)
    assert pipe.folders.dit.name == "acestep-v15-turbo" and pipe.folders.dit.parent.parent == tmp_path / "converted"
    original = ACEStep(
        ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae")
    )
    args = dict(caption="soft rain", duration=10, seed=2)
    np.testing.assert_array_equal(pipe.generate(**args).latents, original.generate(**args).latents)


@pytest.mark.live
def test_a_diffusers_folder_keys_each_component_on_what_it_is_made_from(writable_root, tmp_path):
    """The DiT also reads condition_encoder/ and vae/config.json, the text encoder tokenizer/: a change there
    converts again exactly the components made from it."""
    from mlx_acestep.hub import resolve_model

    def folders():
        got = resolve_model(writable_root, cache_dir=tmp_path / "cache", lm=None)
        return got.dit, got.text_encoder, got.vae

    def touch(path):
        path.write_text(path.read_text() + "\n")

    dit, text, vae = folders()
    assert len({dit.parent, text.parent, vae.parent}) == 3
    touch(writable_root / "tokenizer" / "tokenizer_config.json")
    dit2, text2, vae2 = folders()
    assert text2 != text and (dit2, vae2) == (dit, vae)
    touch(writable_root / "vae" / "config.json")  # the DiT's timbre fix frame comes from it
    dit3, text3, vae3 = folders()
    assert dit3 != dit2 and vae3 != vae2 and text3 == text2
    touch(writable_root / "condition_encoder" / "config.json")
    dit4, text4, vae4 = folders()
    assert dit4 != dit3 and (text4, vae4) == (text3, vae3)
