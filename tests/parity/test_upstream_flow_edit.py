"""Flow-edit against upstream's own `flowedit_generate_audio` at 6d467e4 (`scripts/upstream_flow_edit.py`) on the tiny
fixture turbo and base DiTs: a window inside the schedule with one and two forward-noise draws a step, the whole
schedule, the velocity clamp with the EMA, and base's APG inside a guidance interval. Upstream's forward noise is
stored with each case and handed to ours in the order upstream drew it.

Turbo's cases pass a guidance scale of 7, which upstream's turbo forces to 1 (`modeling_acestep_v15_turbo.py`,
`flowedit_generate_audio`): ours runs turbo unguided."""

import mlx.core as mx
import numpy as np
import pytest
from parity import CONDITION_INPUTS, _mx
from upstream import cases, check, load

from mlx_acestep.diffusion.flow_edit import FlowEditSettings, ForwardNoise, run_flow_edit
from mlx_acestep.diffusion.sampler import run_all
from mlx_acestep.loading import load_silence_latent

RUNS = cases("flow_edit")


def settings_of(args: dict) -> FlowEditSettings:
    turbo = args["family"] == "turbo"
    return FlowEditSettings(
        steps=args["steps"],
        shift=args["shift"],
        n_min=args["edit_n_min"],
        n_max=args["edit_n_max"],
        n_avg=args["edit_n_avg"],
        guidance_scale=1.0 if turbo else args["diffusion_guidance_scale"],
        cfg_interval=(args.get("cfg_interval_start", 0.0), args.get("cfg_interval_end", 1.0)),
        velocity_norm_threshold=args.get("velocity_norm_threshold", 0.0),
        velocity_ema_factor=args.get("velocity_ema_factor", 0.0),
    )


def run(inputs: dict, args: dict, converted, load_converted, settings=None) -> np.ndarray:
    name = f"acestep-v15-{args['family']}"
    model, silence = load_converted(name), load_silence_latent(converted / name)
    source = model.prepare_condition(*_mx(inputs, *CONDITION_INPUTS), silence)
    target = dict(inputs, text_hidden_states=inputs["target_text_hidden_states"])
    target["lyric_hidden_states"] = inputs["target_lyric_hidden_states"]
    target = model.prepare_condition(*_mx(target, *CONDITION_INPUTS), silence)
    settings = settings or settings_of(args)
    song = mx.array(inputs["song"])
    noise = ForwardNoise(song.shape, mx.float32, draws=list(mx.array(inputs["fwd_noise"])))
    steps = run_flow_edit(
        model.decoder,
        (source.encoder_hidden_states, source.context_latents),
        (target.encoder_hidden_states, target.context_latents),
        song,
        settings,
        noise,
        model.null_condition_emb if settings.guided else None,
    )
    out = np.array(run_all(steps))
    assert noise.taken == settings.draws == len(inputs["fwd_noise"])  # every stored draw, each once
    return out


@pytest.mark.parametrize("path", ["cpu-kernels", "metal-path"])
@pytest.mark.parametrize("name", sorted(RUNS))
def test_flow_edit_matches_upstreams_flowedit_generate_audio(name, path, converted, load_converted):
    from mlx_acestep import kernels

    inputs, outputs, args = load(RUNS[name])
    if path == "metal-path":  # the plain formulation every Mac runs, to the same tolerance
        with kernels.use_plain():
            check(f"{name} [metal path]", run(inputs, args, converted, load_converted), outputs["target_latents"])
        return
    ours = run(inputs, args, converted, load_converted)
    # the same run without what the case exercises is far from it: the clamp and EMA, base's guidance interval
    # (guided at every step instead), the second draw a step, or turbo's whole schedule (a window instead)
    if "velocity_ema_factor" in args:
        other = {"velocity_ema_factor": 0.0, "velocity_norm_threshold": 0.0}
    elif args["family"] == "base":
        other = {"cfg_interval_start": 0.0, "cfg_interval_end": 1.0}
    else:
        other = {"edit_n_avg": 1} if args["edit_n_avg"] > 1 else {"edit_n_min": 0.25, "edit_n_max": 0.5}
    plain = settings_of({**args, **other})
    check(name, ours, outputs["target_latents"], plain=_plain(inputs, args, plain, converted, load_converted))


def _plain(inputs, args, settings, converted, load_converted) -> np.ndarray:
    inputs = dict(inputs)
    if settings.draws != len(inputs["fwd_noise"]):  # a different window takes a different number of draws
        extra = np.random.default_rng(0).standard_normal((settings.draws, *inputs["song"].shape)).astype(np.float32)
        inputs["fwd_noise"] = extra
    return run(inputs, args, converted, load_converted, settings)


def test_the_window_counts_upstreams_steps_and_draws():
    s = FlowEditSettings(steps=8, n_min=0.25, n_max=0.75, n_avg=3)
    assert s.window() == (2, 6) and s.steps_run == 6 and s.draws == 4 * 3 + 1
    assert FlowEditSettings(steps=8, n_min=0.0, n_max=1.0).draws == 8  # no target-only steps: no extra draw
    assert FlowEditSettings(steps=10, n_min=0.33, n_max=0.33).draws == 1  # an empty window: the target alone


def test_seeded_forward_noise_is_each_items_own_and_repeats():
    a = ForwardNoise((2, 5, 3), mx.float32, seeds=[7, 8])
    first, second = np.array(a()), np.array(a())
    b = ForwardNoise((1, 5, 3), mx.float32, seeds=[8])
    assert np.array_equal(np.array(b()), first[1:]) and np.array_equal(np.array(b()), second[1:])
    assert not np.allclose(first, second)
