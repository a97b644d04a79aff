"""The DiT checkpoint converter: sharded files, single-folder SRC, key errors, recorded quantization."""

import json

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component
from mlx_acestep.safetensors_io import read_header
from mlx_acestep.convert import ConvertOptions, convert_checkpoints


def params(folder):
    from mlx.utils import tree_flatten

    return dict(tree_flatten(load_component(folder, "dit").parameters()))


def test_sharded_checkpoint_converts_like_the_single_file(turbo_root, converted, tmp_path):
    state = load_file(str(turbo_root / "model.safetensors"))
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
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
