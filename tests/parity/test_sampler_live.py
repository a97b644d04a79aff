"""The sampler paths no fixture records (plain CFG, the base/SFT SDE) against the spec's loop around diffusers'
transformer (tests/parity/torch_sampler.py), live in torch, float32, with injected noise.

The spec loop is first held to the fixtures' golden runs of the reference, so what it says about the other
paths is the reference's behaviour, not a transcription of ours.
"""

import mlx.core as mx
import numpy as np
import pytest
import torch_sampler
from conftest import PARITY_ERRORS
from helpers import rel_err, require
from parity import CONDITION_INPUTS, SAMPLING, _mx, load_case_tensors, load_cases, sampler_settings

from mlx_acestep.diffusion.sampler import BaseSettings, sample_base, sample_turbo
from mlx_acestep.loading import load_component, load_silence_latent

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def reference(fixtures):
    require("torch")
    require("diffusers")
    return {v: torch_sampler.reference_transformer(fixtures, v) for v in ("turbo", "base")}


def case_inputs(fixtures, converted, name):
    """(our DiT, encoder states, context latents, noise, sde noise or None, settings, golden x0) of a fixture case."""
    case = load_cases(fixtures)[name]
    inp, out = load_case_tensors(fixtures, case)
    folder = converted / case["component"]
    model = load_component(folder, "dit")
    prepared = model.prepare_condition(*_mx(inp, *CONDITION_INPUTS), load_silence_latent(folder))
    states, context = np.array(prepared.encoder_hidden_states), np.array(prepared.context_latents)
    return model, states, context, inp["noise"], inp.get("sde_noise"), sampler_settings(case), out["target_latents"]


@pytest.mark.parametrize("name", ["turbo_generate_ode", "turbo_generate_sde", "base_generate_apg", "base_generate_adg"])
def test_the_spec_loop_reproduces_the_reference_runs(fixtures, converted, reference, name):
    """The torch loop of tests/parity/torch_sampler.py equals the reference's own runs recorded in the fixtures."""
    _, states, context, noise, sde, settings, golden = case_inputs(fixtures, converted, name)
    if isinstance(settings, BaseSettings):
        transformer, null = reference["base"]
        theirs = torch_sampler.base(
            transformer,
            null,
            states,
            context,
            noise,
            settings.steps,
            settings.shift,
            settings.guidance_scale,
            settings.guidance,
            settings.method,
            cfg_interval=settings.cfg_interval,
        )
    else:
        transformer, _ = reference["turbo"]
        theirs = torch_sampler.turbo(transformer, states, context, noise, int(settings.shift), settings.method, sde)
    assert rel_err(theirs, golden) < SAMPLING.rel_max


def run_both(fixtures, converted, reference, guidance, method, steps=6, scale=7.0, shift=3.0, seed=0):
    model, states, context, noise, _, _, _ = case_inputs(fixtures, converted, "base_generate_apg")
    rng = np.random.default_rng(seed)
    renoise = [rng.standard_normal(noise.shape).astype(np.float32) for _ in range(steps)] if method == "sde" else None
    settings = BaseSettings(steps=steps, shift=shift, guidance_scale=scale, guidance=guidance, method=method)
    ours = sample_base(
        model.decoder,
        mx.array(states),
        mx.array(context),
        model.null_condition_emb,
        settings,
        noise=mx.array(noise),
        renoise=None if renoise is None else [mx.array(r) for r in renoise],
    )
    transformer, null = reference["base"]
    theirs = torch_sampler.base(
        transformer, null, states, context, noise, steps, shift, scale, guidance, method, renoise
    )
    return np.array(ours), theirs


@pytest.mark.parametrize("guidance, method", [("cfg", "ode"), ("cfg", "sde"), ("apg", "sde"), ("adg", "sde")])
def test_base_guidance_and_sde_match_the_reference(fixtures, converted, reference, guidance, method):
    ours, theirs = run_both(fixtures, converted, reference, guidance, method)
    err = rel_err(ours, theirs)
    PARITY_ERRORS.append((f"base {guidance} {method} (spec loop)", "target_latents", err, SAMPLING.rel_max))
    assert err < SAMPLING.rel_max


def test_plain_cfg_is_not_apg(fixtures, converted, reference):
    """The two guidances differ by far more than the tolerance on this case, so the test above can tell them apart."""
    cfg, _ = run_both(fixtures, converted, reference, "cfg", "ode")
    apg, _ = run_both(fixtures, converted, reference, "apg", "ode")
    assert rel_err(cfg, apg) > 100 * SAMPLING.rel_max


def test_turbo_sde_with_other_noise_matches_the_reference(fixtures, converted, reference):
    model, states, context, noise, _, _, _ = case_inputs(fixtures, converted, "turbo_generate_ode")
    rng = np.random.default_rng(5)
    renoise = [rng.standard_normal(noise.shape).astype(np.float32) for _ in range(7)]
    from mlx_acestep.diffusion.sampler import TurboSettings

    ours = sample_turbo(
        model.decoder,
        mx.array(states),
        mx.array(context),
        TurboSettings(shift=2.0, method="sde"),
        noise=mx.array(noise),
        renoise=[mx.array(r) for r in renoise],
    )
    theirs = torch_sampler.turbo(reference["turbo"][0], states, context, noise, 2, "sde", renoise)
    assert rel_err(np.array(ours), theirs) < SAMPLING.rel_max
