"""The DiT checkpoint converter: sharded files, single-folder SRC, key errors, recorded quantization."""

import json

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mlx_acestep.convert import ConvertOptions, convert_checkpoints
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component
from mlx_acestep.safetensors_io import read_header


def params(folder):
    from mlx.utils import tree_flatten

    return dict(tree_flatten(load_component(folder, "dit").parameters()))


def test_sharded_checkpoint_converts_like_the_single_file(turbo_root, converted, tmp_path):
    state = load_file(str(turbo_root / "model.safetensors"))
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(turbo_root / name))
    (turbo_root / "model.safetensors").unlink()
    weight_map = {k: name for name, part in shards.items() for k in part}
    (turbo_root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    convert_checkpoints(turbo_root.parent, tmp_path / "out")
    got, want = params(tmp_path / "out" / "acestep-v15-turbo"), params(converted / "acestep-v15-turbo")
    assert got.keys() == want.keys()
    assert all(np.array_equal(np.array(got[k]), np.array(want[k])) for k in want)
    manifest = json.loads((tmp_path / "out" / "acestep-v15-turbo" / "manifest.json").read_text())
    assert set(manifest["sources"]) >= {f"acestep-v15-turbo/{n}" for n in shards}


def test_a_dit_folder_can_be_the_source(turbo_root, tmp_path):
    report = convert_checkpoints(turbo_root, tmp_path / "out")
    assert [name for name, _ in report.converted] == ["dit"]


def test_missing_patch_weight_names_the_source_key(turbo_root, tmp_path):
    state = load_file(str(turbo_root / "model.safetensors"))
    del state["decoder.proj_in.1.weight"]
    save_file(state, str(turbo_root / "model.safetensors"))
    with pytest.raises(AceStepError, match=r"missing key 'decoder.proj_in.1.weight'"):
        convert_checkpoints(turbo_root.parent, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_q4_keeps_timestep_embedding_at_8_bits_and_fsq_at_full_precision(turbo_root, tmp_path):
    convert_checkpoints(turbo_root.parent, tmp_path / "q4", ConvertOptions(quantize="q4", group_size=64))
    folder = tmp_path / "q4" / "acestep-v15-turbo"
    block = json.loads((folder / "config.json").read_text())["quantization"]
    assert block["bits"] == 4 and block["mode"] == "affine"
    eight = {p for p, v in block.items() if isinstance(v, dict)}  # mlx-lm's per-path entries
    assert eight and all("time_embed" in p and block[p]["bits"] == 8 for p in eight)
    quantized = {k[: -len(".scales")] for k in read_header(folder / "model.safetensors")[0] if k.endswith(".scales")}
    assert eight <= quantized and "decoder.layers.0.self_attn.q_proj" in quantized
    assert not [p for p in quantized if "quantizer" in p or "proj_in" in p or "proj_out" in p or "embed_tokens" in p]
    model = load_component(tmp_path / "q4" / "acestep-v15-turbo", "dit")
    assert model.decoder.time_embed.time_proj.bits == 8 and model.decoder.layers[0].mlp.up_proj.bits == 4
    assert isinstance(model.tokenizer.quantizer.project_in.weight, mx.array)


# -- the config, not the folder name, says what a DiT is; required keys are required ------------------


def test_the_family_comes_from_the_config():
    import warnings

    from mlx_acestep.models.dit import AceStepConfig
    from mlx_acestep.models.dit.config import model_family

    assert model_family(AceStepConfig(is_turbo=True), "my-sft-folder") == "turbo"
    assert model_family(AceStepConfig(model_version="sft"), "acestep-v15-base") == "sft"
    assert model_family(AceStepConfig(model_version="base"), "some-sft-copy") == "base"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert model_family(AceStepConfig(), "acestep-v15-sft") == "sft"  # neither field: the name, with a warning
    assert "names no model family" in str(caught[0].message)


def test_an_sft_dit_runs_with_sft_defaults_whatever_its_folder(converted, tmp_path):
    """The diffusers layout names folders by config; a renamed SFT folder still gets SFT's 50 steps."""
    import shutil

    from mlx_acestep.pipeline import ACEStep, ModelFolders

    folder = tmp_path / "my-model"
    shutil.copytree(converted / "acestep-v15-base", folder)
    config = json.loads((folder / "config.json").read_text()) | {"model_version": "sft"}
    (folder / "config.json").write_text(json.dumps(config))
    pipe = ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", folder, converted / "vae"))
    assert pipe.family == "sft" and pipe.sampler_settings().steps == 50


@pytest.mark.parametrize("key", ["rope_theta", "sliding_window", "layer_types"])
def test_a_config_without_a_required_key_is_one_line_naming_file_and_key(turbo_root, tmp_path, key):
    config = json.loads((turbo_root / "config.json").read_text())
    del config[key]
    (turbo_root / "config.json").write_text(json.dumps(config))
    with pytest.raises(AceStepError, match=rf"acestep-v15-turbo/config.json: missing required key '{key}'$"):
        convert_checkpoints(turbo_root.parent, tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["src"]


def test_a_qwen3_config_without_a_required_key_names_file_and_key(fixtures, tmp_path):
    import shutil

    src = tmp_path / "src" / "Qwen3-Embedding-0.6B"
    shutil.copytree(fixtures / "checkpoints" / "Qwen3-Embedding-0.6B", src)
    config = json.loads((src / "config.json").read_text())
    del config["num_key_value_heads"]
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        AceStepError, match=r"Qwen3-Embedding-0.6B/config.json: missing required key 'num_key_value_heads'"
    ):
        convert_checkpoints(src.parent, tmp_path / "out")
    assert not (tmp_path / "out").exists()
