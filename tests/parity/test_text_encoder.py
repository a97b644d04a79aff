"""Qwen3 text encoder: live parity with transformers on a random config, bf16 and float16, converter details."""

import shutil

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import drawn_seeds, rel_err, require, snr_db

from mlx_acestep.convert import ConvertOptions, convert_checkpoints
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component

CONFIG = dict(
    hidden_size=48,
    intermediate_size=80,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=300,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)
# Half-precision floor: transformers' own error on the same ids (its Qwen3Model cast to the dtype) less 3 dB, over
# drawn seeds, i.e. ours may be at most twice the reference's error power. Measured over 5 seeds: bf16 ours
# 33.7-35.6 dB against transformers' 33.6-35.9; float16 ours 51-54 dB against 50.8-53.4.
BF16_MARGIN_DB = 3.0
HALF_DTYPES = ("bfloat16", "float16")


@pytest.fixture(scope="module")
def live(fixtures, tmp_path_factory):
    torch = require("torch")
    transformers = require("transformers")
    torch.manual_seed(11)
    ref = transformers.Qwen3Model(transformers.Qwen3Config(**CONFIG, attn_implementation="sdpa")).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.2 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("live_text")
    src = root / "src" / "Qwen3-Embedding-0.6B"
    ref.save_pretrained(src, safe_serialization=True)
    shutil.copy(fixtures / "checkpoints" / "Qwen3-Embedding-0.6B" / "tokenizer.json", src)
    convert_checkpoints(root / "src", root / "f32")
    for dtype in HALF_DTYPES:
        convert_checkpoints(root / "src", root / dtype, ConvertOptions(dtype=dtype))
    return ref, load_component(root / "f32" / "Qwen3-Embedding-0.6B", "text_encoder"), root


@pytest.mark.live
def test_matches_transformers_with_and_without_padding_mask(live):
    import torch

    ref, ours, _ = live
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CONFIG["vocab_size"], size=(2, 13))
    mask = np.ones((2, 13), dtype=np.int64)
    mask[1, 9:] = 0  # ragged: row 1 right-padded
    with torch.no_grad():
        want_plain = ref(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
        want_masked = ref(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state.numpy()
        want_embed = ref.get_input_embeddings()(torch.from_numpy(ids)).numpy()
    got_plain = np.array(ours(mx.array(ids)))
    got_masked = np.array(ours(mx.array(ids), attention_mask=mx.array(mask)))
    assert rel_err(got_plain, want_plain) < 1e-4
    assert rel_err(got_masked, want_masked) < 1e-4
    assert not np.allclose(want_plain[1, 9:], want_masked[1, 9:])  # the mask really changes padded rows
    np.testing.assert_array_equal(np.array(ours.embed(mx.array(ids))), want_embed)


@pytest.mark.live
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_against_float32(live, dtype):
    import copy

    import torch

    ref, ours, root = live
    half = load_component(root / dtype / "Qwen3-Embedding-0.6B", "text_encoder")
    ref_half = copy.deepcopy(ref).to(getattr(torch, dtype))
    for seed in drawn_seeds():
        ids = np.random.default_rng(seed).integers(0, CONFIG["vocab_size"], size=(2, 17))
        snr = snr_db(np.array(half(mx.array(ids)).astype(mx.float32)), np.array(ours(mx.array(ids))))
        with torch.no_grad():
            want = ref(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
            theirs = ref_half(input_ids=torch.from_numpy(ids)).last_hidden_state.float().numpy()
        floor = snr_db(theirs, want) - BF16_MARGIN_DB
        PARITY_ERRORS.append((f"text_encoder {dtype} SNR dB", f"seed {seed}", snr, floor))
        assert snr >= floor, f"seed {seed}: {snr:.1f} dB < {floor:.1f} dB (replay with MLX_ACESTEP_HALF_SEEDS)"


def test_remap_strips_prefix_and_tied_head():
    from mlx_acestep.models.text_encoder import Qwen3TextEncoder, text_encoder_args

    state = {"model.embed_tokens.weight": 1, "model.norm.weight": 2, "lm_head.weight": 3}
    tied = Qwen3TextEncoder(text_encoder_args(CONFIG | {"model_type": "qwen3", "tie_word_embeddings": True}))
    untied = Qwen3TextEncoder(text_encoder_args(CONFIG | {"model_type": "qwen3", "tie_word_embeddings": False}))
    assert tied.sanitize(state) == {"embed_tokens.weight": 1, "norm.weight": 2}
    assert "lm_head.weight" in untied.sanitize(state)


def test_missing_tokenizer_is_a_clear_error(fixtures, tmp_path):
    src = tmp_path / "src" / "Qwen3-Embedding-0.6B"
    shutil.copytree(fixtures / "checkpoints" / "Qwen3-Embedding-0.6B", src)
    (src / "tokenizer.json").unlink()
    with pytest.raises(AceStepError, match=r"tokenizer\.json: file not found"):
        convert_checkpoints(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_ids_shape(load_converted):
    with pytest.raises(AceStepError, match=r"token ids must be \[batch, length\]"):
        load_converted("Qwen3-Embedding-0.6B")(mx.zeros((5,), dtype=mx.int32))
