"""The planner LM's model and converter: live against transformers' Qwen3ForCausalLM, mlx-lm loading, quantization."""

import json

import mlx.core as mx
import numpy as np
import pytest
from helpers import rel_err, require

from mlx_acestep.convert import ConvertOptions, convert_checkpoints
from mlx_acestep.loading import load_component

LM = "acestep-5Hz-lm-0.6B"


@pytest.fixture(scope="module")
def lm_root(fixtures, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("lm") / "src"
    shutil.copytree(fixtures / "checkpoints" / LM, root / LM)
    return root


@pytest.mark.live
def test_left_padded_batch_matches_transformers_with_a_key_mask(fixtures, converted):
    """[cond, uncond] left-padded, pads masked as keys, positions 0..L-1 on both rows (the reference's CFG batch)."""
    torch = require("torch")
    from transformers import Qwen3ForCausalLM

    ref = Qwen3ForCausalLM.from_pretrained(fixtures / "checkpoints" / LM, torch_dtype=torch.float32).eval()
    ours = load_component(converted / LM, "lm")
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 2661, (2, 19))
    mask = np.ones((2, 19), np.int64)
    mask[1, :6] = 0  # row 1 left-padded by 6
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    got = np.array(ours.logits(mx.array(ids), key_mask=mx.array(mask)))
    assert rel_err(got[0], want[0]) < 1e-4
    assert rel_err(got[1, 6:], want[1, 6:]) < 1e-4  # the pad positions' own outputs are never used


def test_cached_steps_equal_one_full_forward(converted):
    from mlx_lm.models.cache import make_prompt_cache

    lm = load_component(converted / LM, "lm")
    ids = mx.array(np.random.default_rng(1).integers(0, 2661, (2, 12)))
    mask = mx.array(np.array([[1] * 12, [0] * 3 + [1] * 9]))
    full = np.array(lm.logits(ids, key_mask=mask))
    cache = make_prompt_cache(lm)
    first = np.array(lm.logits(ids[:, :8], cache, mask[:, :8]))
    rest = [np.array(lm.logits(ids[:, i : i + 1], cache, mask[:, : i + 1])) for i in range(8, 12)]
    np.testing.assert_allclose(
        np.concatenate([first, *rest], axis=1)[:, 3:], full[:, 3:], atol=1e-4 * np.abs(full).max()
    )


def test_converted_folder_loads_with_mlx_lm(converted):
    from mlx_lm import load

    model, tokenizer = load(str(converted / LM))
    ids = mx.array([[5, 17, 300, 514]])
    ours = load_component(converted / LM, "lm")
    np.testing.assert_allclose(np.array(model(ids)), np.array(ours.logits(ids)), atol=1e-5)
    assert tokenizer.convert_tokens_to_ids("<|audio_code_0|>") == 538


def test_quantized_lm_keeps_the_embedding_at_8_bits(lm_root, tmp_path):
    convert_checkpoints(lm_root, tmp_path / "q4", ConvertOptions(quantize="q4", group_size=32))
    block = json.loads((tmp_path / "q4" / LM / "config.json").read_text())["quantization"]
    assert block == {
        "group_size": 32,
        "bits": 4,
        "mode": "affine",
        "model.embed_tokens": {"group_size": 32, "bits": 8, "mode": "affine"},
    }  # mlx-lm's format
    lm = load_component(tmp_path / "q4" / LM, "lm")
    assert lm.model.embed_tokens.bits == 8 and lm.model.layers[0].mlp.up_proj.bits == 4
    assert np.isfinite(np.array(lm.logits(mx.array([[1, 2, 3]])))).all()


@pytest.mark.parametrize("mode", ["q8", "q4"])
def test_quantized_planner_loads_with_mlx_lm_as_converted(lm_root, tmp_path, mode):
    """mlx-lm reads the per-path quantization entries (the 8-bit embedding of a q4 planner) and gets our logits."""
    from mlx_lm import load

    convert_checkpoints(lm_root, tmp_path / mode, ConvertOptions(quantize=mode, group_size=32))
    model, _ = load(str(tmp_path / mode / LM))
    ours = load_component(tmp_path / mode / LM, "lm")
    assert model.model.embed_tokens.bits == 8 and model.model.layers[0].mlp.up_proj.bits == int(mode[1])
    ids = mx.array([[5, 17, 300, 514, 600]])
    np.testing.assert_allclose(np.array(model(ids)), np.array(ours.logits(ids)), atol=1e-5)


def test_planner_files_without_the_model_prefix_convert(lm_root, tmp_path):
    """Some official planner files store `embed_tokens.weight`, `layers.0...` (no `model.`); the reference's own
    MLX loader re-prefixes them, and so does the converter."""
    import shutil

    from safetensors.numpy import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(lm_root, src)
    path = src / LM / "model.safetensors"
    state = load_file(str(path))
    save_file({k.removeprefix("model."): v for k, v in state.items()}, str(path), metadata={"format": "pt"})
    convert_checkpoints(src, tmp_path / "out")
    ids = mx.array([[1, 2, 3]])
    want = load_component(tmp_path / "out" / LM, "lm").logits(ids)
    convert_checkpoints(lm_root, tmp_path / "ref")
    np.testing.assert_array_equal(np.array(want), np.array(load_component(tmp_path / "ref" / LM, "lm").logits(ids)))
