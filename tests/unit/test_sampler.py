"""Samplers: schedules against the spec, seeded noise, bf16 and quantized DiTs on the fixture runs."""

import shutil

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import rel_err, require
from parity import CONDITION_INPUTS, _mx, load_case_tensors, load_cases, sampler_settings

from mlx_acestep.convert import ConvertOptions, convert_checkpoints
from mlx_acestep.diffusion.sampler import (
    VALID_TIMESTEPS,
    BaseSettings,
    TurboSettings,
    base_timesteps,
    sample_base,
    sample_turbo,
    turbo_timesteps,
)
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component, load_silence_latent

# spec 5.6: the tables and the bf16-rounded values the reference uses on CUDA
SPEC_TABLES = {
    1: [1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125],
    2: [1, 0.93333, 0.85714, 0.76923, 0.66667, 0.54545, 0.4, 0.22222],
    3: [1, 0.954545, 0.9, 0.833333, 0.75, 0.642857, 0.5, 0.3],
}
SPEC_BF16 = {
    2: [1, 0.93359375, 0.85546875, 0.76953125, 0.66796875, 0.546875, 0.400390625, 0.22265625],
    3: [1, 0.953125, 0.8984375, 0.83203125, 0.75, 0.64453125, 0.5, 0.30078125],
}
# bf16 and float16 against float32: tests/parity/test_half_sampling.py, over drawn seeds.
# (min cosine, max error relative to max|ref|) of the quantized DiT against float32. The reference cannot run q8/q4
# (it has no such weights), so the floors come from the quantizer's own error: affine group-64 rounding leaves
# a relative weight error of about 2^-bits (q8 ~4e-3, q4 ~6e-2), which eight steps through three layers carry
# into the latents at a few times that. Measured: q8 1-cos 3.8e-5, max err 8.8e-3; q4 1-cos 9.9e-3, 0.16.
QUANT_FLOORS = {"q8": (0.999, 0.05), "q4": (0.95, 0.35)}


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_turbo_tables_are_the_specs(shift):
    np.testing.assert_allclose(turbo_timesteps(shift), SPEC_TABLES[shift], atol=1e-5)
    if shift in SPEC_BF16:
        assert mx.array(turbo_timesteps(shift), dtype=mx.bfloat16).tolist() == SPEC_BF16[shift]
    assert turbo_timesteps(shift + 0.4) == turbo_timesteps(shift)  # snapped to the nearest table


def test_custom_timesteps_snap_to_the_twenty_table_values():
    assert len(VALID_TIMESTEPS) == 20
    got = turbo_timesteps(timesteps=[0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0.0, 0.0])
    np.testing.assert_allclose(got, [0.954545, 0.769231, 0.625, 0.5, 0.4, 0.3, 0.222222, 0.125], atol=1e-5)
    for bad in ([], [0.0], [0.5] * 21, [1.5]):
        with pytest.raises(AceStepError):
            turbo_timesteps(timesteps=bad)


@pytest.mark.live
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("steps, shift", [(8, 3.0), (50, 1.0), (50, 3.0), (30, 2.5), (7, 1.0), (27, 0.7), (60, 3.3)])
def test_base_schedule_is_torch_linspace_then_shift(steps, shift, dtype):
    """In the model dtype, as the reference builds it (modeling_acestep_v15_base.py:1949-1952): in bfloat16 and
    float16 the exact times rounded once differ from it at 24 of 51 times for 50 steps at shift 3."""
    torch = require("torch")
    t = torch.linspace(1, 0, steps + 1, dtype=getattr(torch, dtype))
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    assert base_timesteps(steps, shift, dtype=getattr(mx, dtype)) == t.tolist()


def test_base_schedule_in_bfloat16_matches_the_spec_example():
    values = mx.array(base_timesteps(50, 1.0), dtype=mx.bfloat16).tolist()
    assert values[:6] == [1, 0.98046875, 0.9609375, 0.94140625, 0.921875, 0.8984375]
    assert values[-3:] == [0.0400390625, 0.02001953125, 0]


# --- whole runs on the fixture cases ----------------------------------------------------


def fixture_run(fixtures, folder, case_name, **kwargs):
    case = load_cases(fixtures)[case_name]
    inp, out = load_case_tensors(fixtures, case)
    model = load_component(folder, "dit")
    prepared = model.prepare_condition(*_mx(inp, *CONDITION_INPUTS), load_silence_latent(folder))
    dtype = model.dtype
    settings = sampler_settings(case)
    args = (model.decoder, prepared.encoder_hidden_states.astype(dtype), prepared.context_latents.astype(dtype))
    noise = mx.array(inp["noise"])
    if isinstance(settings, BaseSettings):
        x0 = sample_base(*args, model.null_condition_emb, settings, noise=noise, **kwargs)
    else:
        renoise = list(mx.array(inp["sde_noise"])) if "sde_noise" in inp else None
        x0 = sample_turbo(*args, settings, noise=noise, renoise=renoise, **kwargs)
    return np.array(x0.astype(mx.float32)), out["target_latents"]


@pytest.fixture(scope="module")
def variants(fixtures, tmp_path_factory):
    """The fixture DiTs converted in q8 and q4 (affine, group 64)."""
    root = tmp_path_factory.mktemp("dit_variants")
    for name in ("acestep-v15-turbo", "acestep-v15-base"):
        shutil.copytree(fixtures / "checkpoints" / name, root / "src" / name)
    options = {
        "q8": ConvertOptions(quantize="q8"),
        "q4": ConvertOptions(quantize="q4"),
    }
    for label, opts in options.items():
        convert_checkpoints(root / "src", root / label, opts)
    return root


@pytest.mark.parametrize("mode", ["q8", "q4"])
def test_quantized_dit_on_turbo_ode(fixtures, converted, variants, mode):
    import mlx.nn as nn

    from mlx_acestep.loading import load_component

    model = load_component(variants / mode / "acestep-v15-turbo", "dit")
    time_layers = [m for p, m in model.named_modules() if "time_embed" in p and isinstance(m, nn.QuantizedLinear)]
    assert time_layers and all(m.bits >= 8 for m in time_layers)
    full, _ = fixture_run(fixtures, converted / "acestep-v15-turbo", "turbo_generate_ode")
    quant, _ = fixture_run(fixtures, variants / mode / "acestep-v15-turbo", "turbo_generate_ode")
    cosine = float(np.sum(full * quant) / np.sqrt(np.sum(full**2) * np.sum(quant**2)))
    err = rel_err(quant, full)
    min_cos, max_err = QUANT_FLOORS[mode]
    PARITY_ERRORS.append((f"turbo_generate_ode {mode} 1-cosine", "target_latents", 1 - cosine, 1 - min_cos))
    PARITY_ERRORS.append((f"turbo_generate_ode {mode}", "target_latents", err, max_err))
    assert cosine >= min_cos and err <= max_err


# --- noise and bad settings ---------------------------------------------------------------


def test_seeded_noise_is_reproducible_and_checked(converted):
    model = load_component(converted / "acestep-v15-turbo", "dit")
    states = mx.random.normal((1, 6, 64), key=mx.random.key(1))
    context = mx.zeros((1, 12, 128))
    runs = [sample_turbo(model.decoder, states, context, key=mx.random.key(seed)) for seed in (5, 5, 6)]
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))
    assert not np.allclose(np.array(runs[0]), np.array(runs[2]))
    with pytest.raises(AceStepError, match=r"noise has shape \(1, 11, 64\), expected \(1, 12, 64\)"):
        sample_turbo(model.decoder, states, context, noise=mx.zeros((1, 11, 64)))
    with pytest.raises(AceStepError, match="unknown sampling method 'heun'"):
        sample_turbo(model.decoder, states, context, TurboSettings(method="heun"))
    with pytest.raises(AceStepError, match="unknown guidance 'pag'"):
        sample_base(model.decoder, states, context, model.null_condition_emb, BaseSettings(guidance="pag"))
