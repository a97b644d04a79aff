"""DiT decoder, FSQ tokenizer/detokenizer: live parity with diffusers on random tiny configs, remaps."""

import mlx.core as mx
import numpy as np
import pytest
from helpers import diffusers_dit_checkpoint, rel_err, require

from mlx_acestep.convert import convert_checkpoints
from mlx_acestep.diffusion.loop import Denoiser
from mlx_acestep.loading import load_component, load_silence_latent

# Unlike the fixture: 6 heads over 2 kv heads, window 3 patches (so T = 23 crosses it), 3 layers.
CONFIG = dict(
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=8,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    sliding_window=3,
    use_sliding_window=True,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    text_hidden_dim=24,
    timbre_hidden_dim=64,
    num_lyric_encoder_hidden_layers=2,
    num_timbre_encoder_hidden_layers=2,
    fsq_dim=48,
    in_channels=192,
    audio_acoustic_hidden_dim=64,
    patch_size=2,
    pool_window_size=5,
    num_attention_pooler_hidden_layers=2,
)
# XL's shape: the decoder wider than the condition side (condition_embedder maps 40 -> 56).
XL_CONFIG = CONFIG | dict(
    hidden_size=56,
    intermediate_size=112,
    num_attention_heads=7,
    num_key_value_heads=1,
    encoder_hidden_size=40,
    encoder_intermediate_size=80,
    encoder_num_attention_heads=5,
    encoder_num_key_value_heads=5,
    fsq_dim=40,
)


@pytest.fixture(scope="module", params=["2B", "XL"])
def live(request, tmp_path_factory):
    require("torch")
    require("diffusers")
    config = CONFIG if request.param == "2B" else XL_CONFIG
    root = tmp_path_factory.mktemp(f"live_dit_{request.param}")
    modules = diffusers_dit_checkpoint(config, root / "src" / "acestep-v15-turbo", seed=7)
    convert_checkpoints(root / "src", root / "f32")
    folder = root / "f32" / "acestep-v15-turbo"
    return modules, load_component(folder, "dit"), folder, config


def dit_inputs(config, length=23, seed=0):
    rng = np.random.default_rng(seed)
    width = config.get("encoder_hidden_size") or config["hidden_size"]
    x = rng.standard_normal((2, length, 64)).astype(np.float32)
    context = np.concatenate(
        [rng.standard_normal((2, length, 64)), (rng.random((2, length, 1)) > 0.5).repeat(64, -1)], -1
    )
    states = rng.standard_normal((2, 11, width)).astype(np.float32)
    # Row 1's condition is "padded" (as packing leaves it): the DiT has no mask input and attends to all of it.
    states[1, 8:] = rng.standard_normal((3, width)) * 0.1
    t = np.array([0.9, 0.35], np.float32)
    return x, t, context.astype(np.float32), states


@pytest.mark.live
def test_decoder_matches_diffusers_odd_length_batch_2(live):
    import torch

    modules, ours, _, config = live
    x, t, context, states = dit_inputs(config)
    with torch.no_grad():
        want = modules["transformer"](
            hidden_states=torch.from_numpy(x),
            timestep=torch.from_numpy(t),
            timestep_r=torch.from_numpy(t),
            encoder_hidden_states=torch.from_numpy(states),
            context_latents=torch.from_numpy(context),
            return_dict=False,
        )[0].numpy()
    got = []
    for row in range(2):  # one Denoiser per row: each has its own t
        denoise = Denoiser(ours.decoder, mx.array(states[row : row + 1]), mx.array(context[row : row + 1]))
        got.append(np.array(denoise(mx.array(x[row : row + 1]), float(t[row]))))
    assert rel_err(np.concatenate(got), want) < 1e-4
    batched = ours.decoder(
        mx.array(x), mx.array(t), mx.array(t), mx.array(context), ours.decoder.cross_key_values(mx.array(states))
    )
    assert rel_err(np.array(batched), want) < 1e-4


@pytest.mark.live
def test_mean_flow_timestep_r(live):
    import torch

    modules, ours, _, config = live
    x, t, context, states = dit_inputs(config, length=18, seed=1)
    r = t * 0.5
    with torch.no_grad():
        want = modules["transformer"](
            hidden_states=torch.from_numpy(x),
            timestep=torch.from_numpy(t),
            timestep_r=torch.from_numpy(r),
            encoder_hidden_states=torch.from_numpy(states),
            context_latents=torch.from_numpy(context),
            return_dict=False,
        )[0].numpy()
    got = ours.decoder(
        mx.array(x), mx.array(t), mx.array(r), mx.array(context), ours.decoder.cross_key_values(mx.array(states))
    )
    assert rel_err(np.array(got), want) < 1e-4


@pytest.mark.live
@pytest.mark.parametrize("length", [40, 37])
def test_tokenizer_and_detokenizer_match_diffusers(live, length):
    import torch

    modules, ours, folder, _ = live
    latents = np.random.default_rng(length).standard_normal((2, length, 64)).astype(np.float32)
    silence = modules["silence_latent"]
    with torch.no_grad():
        want_q, want_idx = modules["audio_tokenizer"].tokenize(torch.from_numpy(latents), silence)
        want_hints = modules["audio_token_detokenizer"](want_q).numpy()
        want_from_idx = modules["audio_tokenizer"].quantizer.get_output_from_indices(want_idx).numpy()
    q, idx, mask, _ = ours.tokenizer.tokenize(mx.array(latents), load_silence_latent(folder))
    np.testing.assert_array_equal(np.array(idx), want_idx.numpy())
    assert rel_err(np.array(q), want_q.numpy()) < 1e-4
    assert rel_err(np.array(ours.detokenizer(q)), want_hints) < 1e-4
    assert rel_err(np.array(ours.tokenizer.quantizer.from_indices(idx)), want_from_idx) < 1e-4
    assert np.array(mask).shape == (2, -(-length // 5)) and np.array(mask).min() == 1


@pytest.mark.live
def test_patch_remap_is_the_convolution():
    """proj_in / proj_out as linear maps over frame pairs equal the reference's k=2, s=2 (transposed) convolutions."""
    torch = require("torch")
    from mlx_acestep.models.dit import AceStepConfig, AceStepModel

    conv = torch.nn.Conv1d(6, 5, 2, stride=2)
    deconv = torch.nn.ConvTranspose1d(5, 3, 2, stride=2)
    state = {
        "decoder.proj_in.1.weight": conv.weight,
        "decoder.proj_in.1.bias": conv.bias,
        "decoder.proj_out.1.weight": deconv.weight,
        "decoder.proj_out.1.bias": deconv.bias,
    }
    model = AceStepModel(AceStepConfig(patch_size=2), parts=())
    mapped = model.sanitize({k: mx.array(v.detach().numpy()) for k, v in state.items()})
    x = torch.randn(1, 6, 8)
    with torch.no_grad():
        h = conv(x)
        want = deconv(h).numpy()
    pairs = mx.array(x.numpy().transpose(0, 2, 1)).reshape(1, 4, 12)
    got_h = pairs @ mapped["decoder.proj_in.weight"].T + mapped["decoder.proj_in.bias"]
    np.testing.assert_allclose(np.array(got_h), h.numpy().transpose(0, 2, 1), atol=1e-5)
    got = (got_h @ mapped["decoder.proj_out.weight"].T + mapped["decoder.proj_out.bias"]).reshape(1, 8, 3)
    np.testing.assert_allclose(np.array(got), want.transpose(0, 2, 1), atol=1e-5)


@pytest.mark.parametrize(
    "length, window, heads, kv_heads", [(37, 3, 6, 2), (40, 8, 4, 4), (13, 4, 4, 1), (100, 7, 8, 2)]
)
def test_banded_sliding_attention_equals_the_masked_one(length, window, heads, kv_heads):
    from mlx_acestep.kernels.attention import cpu_attention
    from mlx_acestep.models.layers import additive_mask, attention

    keys = mx.random.split(mx.random.key(length), 3)
    q = mx.random.normal((2, heads, length, 16), key=keys[0])
    k, v = (mx.random.normal((2, kv_heads, length, 16), key=key) for key in keys[1:])
    mask = additive_mask(length, None, window, mx.float32)
    np.testing.assert_allclose(
        np.array(attention(q, k, v, 0.25, mask, band=window)), np.array(cpu_attention(q, k, v, 0.25, mask)), atol=1e-6
    )


@pytest.mark.parametrize("shape", [(1, 375, 1024), (2, 257, 1031), (65, 4096)])
def test_swiglu_on_two_streams_equals_the_fused_one(shape):
    """The CPU fast path splits the tokens over two streams: the same values, bit for bit, odd halves included
    (and the sizes are past the split's threshold, so the split really runs)."""
    from mlx_lm.models.activations import swiglu

    from mlx_acestep.kernels import activations

    gate, up = (mx.random.normal(shape, key=mx.random.key(i)) for i in (1, 2))
    assert gate.size >= activations._SPLIT_MIN
    np.testing.assert_array_equal(np.array(activations.swiglu(gate, up)), np.array(swiglu(gate, up)))
