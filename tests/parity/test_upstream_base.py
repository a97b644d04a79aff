"""The newer sampler options on base / SFT against upstream's own base `generate_audio` at 6d467e4
(`scripts/upstream_base.py`; SFT's modeling file runs the same loop): DCW (double under APG, low under ADG), Heun
(under APG and ADG), the velocity clamp and EMA, Heun with both and with DCW, cover noise and retake, on the
February base cases' condition and noise, eight steps, float32.

Upstream's base loop guides each evaluation before the clamp and EMA see it; Heun also takes the last step (its
second evaluation at t = 0, where turbo's loop jumps to x0) and guides that second evaluation with plain CFG under
APG (APG's momentum moves once a step), with ADG under ADG except at t = 0 (plain CFG: ADG divides by t), each
inside the CFG interval checked at the step's end (the ADG case's interval ends at 0.7, between two of its times).
DCW's clean estimate takes the step's first velocity. SFT's `modeling_acestep_v15_base.py` differs from base's
only in comments, the place of `timesteps` among the keywords, and where `cover_steps` is counted (after custom
timesteps set the step count, not before): none of it reaches these runs."""

import dataclasses

import mlx.core as mx
import pytest
from helpers import rel_err
from upstream import TOLERANCE, BaseRun, cases, check, load

from mlx_acestep.diffusion import guidance
from mlx_acestep.diffusion.dcw import DCW
from mlx_acestep.diffusion.edits import EditHooks
from mlx_acestep.diffusion.flow import retake
from mlx_acestep.diffusion.sampler import BaseSettings

RUNS = cases("acestep-v15-base:sampler")


def plain(args: dict) -> BaseSettings:
    """The February case's settings: upstream's base call without the newer options."""
    return BaseSettings(
        steps=args["infer_steps"],
        shift=args["shift"],
        guidance_scale=args["diffusion_guidance_scale"],
        guidance="adg" if args["use_adg"] else "apg",
        cfg_interval=(args.get("cfg_interval_start", 0.0), args.get("cfg_interval_end", 1.0)),
    )


def settings_of(args: dict) -> BaseSettings:
    dcw = DCW(args["dcw_mode"], args["dcw_scaler"], args["dcw_high_scaler"]) if args["dcw_enabled"] else None
    return dataclasses.replace(
        plain(args),
        dcw=dcw,
        solver=args.get("sampler_mode", "euler"),
        velocity_norm_threshold=args.get("velocity_norm_threshold", 0.0),
        velocity_ema_factor=args.get("velocity_ema_factor", 0.0),
    )


def run_case(name: str, converted, load_converted):
    """(ours, the golden, ours without the option) for a case."""
    inputs, outputs, args = load(RUNS[name])
    run = BaseRun(inputs, converted, load_converted)
    noise = run.noise
    if args.get("retake_variance"):
        noise = retake(noise, mx.array(inputs["retake_noise"]), args["retake_variance"])
    edit = None
    if args.get("cover_noise_strength"):
        edit = EditHooks(source=mx.array(inputs["src_latents"]), cover_noise=args["cover_noise_strength"])
    return run(settings_of(args), noise, edit), outputs["target_latents"], run(plain(args))


def test_every_option_is_covered_and_heun_under_both_guidances():
    seen = {key for case in RUNS.values() for key in case["args"]}
    assert {"sampler_mode", "velocity_norm_threshold", "velocity_ema_factor", "dcw_mode"} <= seen
    assert {"cover_noise_strength", "retake_variance"} <= seen
    heun = {case["args"]["use_adg"] for case in RUNS.values() if case["args"].get("sampler_mode") == "heun"}
    assert heun == {False, True}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_newer_options_match_upstreams_base_generate_audio(name, converted, load_converted, formulation):
    check(name, *run_case(name, converted, load_converted), label=formulation)


BASE_FLOW = BaseSettings.flow


def jumping(settings: BaseSettings, dtype):
    """Turbo's rule for the last step: one evaluation, straight to x0."""
    return dataclasses.replace(BASE_FLOW(settings, dtype), heun_last_step=False)


@pytest.mark.parametrize("name", ["base_heun", "base_heun_adg"])
def test_heun_follows_the_base_loop_not_turbos(name, converted, load_converted, monkeypatch):
    """The goldens tell the base rule from the others: a last step that jumps to x0 (turbo's loop), or APG guiding
    the second evaluation too (its momentum moving twice a step), lands far from them."""
    inputs, outputs, args = load(RUNS[name])
    run = BaseRun(inputs, converted, load_converted)
    variants = {"the last step jumps": (BaseSettings, "flow", jumping)}
    if not args["use_adg"]:
        variants["APG guides the corrector"] = (guidance.APG, "corrector", guidance.APG.__call__)
    for what, (owner, attribute, value) in variants.items():
        with monkeypatch.context() as patch:
            patch.setattr(owner, attribute, value)
            err = rel_err(run(settings_of(args)), outputs["target_latents"])
        assert err > 30 * TOLERANCE, (what, err)
