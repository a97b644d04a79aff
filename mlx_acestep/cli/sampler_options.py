"""`generate`'s flags for the options upstream added after February (Heun, the velocity clamp and EMA, cover noise,
retake, DCW, repaint's chunk mask mode, the planner's codes prompt) and for the custom sampling and conditioning the
REST side serves (server/custom_fields.py: the guidance kind, upstream's `use_adg`; the guidance interval; a custom
schedule; the planner's top-k; given 5 Hz codes): declared once here, each the request field of the same name. Each
value is checked where the REST side's is (the request's fields, pipeline/custom.py; the schedule's text by the REST
side's parser), so a bad one fails alike on both, named by its flag here."""

from __future__ import annotations

import click

from ..names import CHUNK_MASK_MODES, DCW_MODES, DCW_WAVELETS, GUIDANCE_KINDS, LM_CODES_PROMPTS, SOLVERS

SAMPLER_FIELDS = (  # every flag below but --retake-seed (resolved to seeds first) and --timesteps (text: `schedule`)
    "sampler",
    "velocity_norm_threshold",
    "velocity_ema_factor",
    "cover_noise_strength",
    "retake_variance",
    "dcw",
    "dcw_mode",
    "dcw_scaler",
    "dcw_high_scaler",
    "dcw_wavelet",
    "chunk_mask_mode",
    "lm_codes_prompt",
    "guidance_kind",
    "cfg_interval",
    "lm_top_k",
    "audio_codes",
)


# The flags, in this order in --help (`--retake-seed` is resolved to one seed per item before the run).
_OPTIONS = [
    click.option(
        "--sampler",
        type=click.Choice(SOLVERS),
        default=None,
        help="The ODE's integrator: euler (default, one DiT pass a step) or heun (two, slower).",
    ),
    click.option(
        "--velocity-norm-threshold",
        type=float,
        default=None,
        help="Upstream's velocity clamp: no step's velocity longer than this times the latent's (0 = off).",
    ),
    click.option(
        "--velocity-ema-factor",
        type=float,
        default=None,
        help="Upstream's velocity smoothing: this share of the previous step's velocity (0 = off).",
    ),
    click.option(
        "--cover-noise-strength",
        type=float,
        default=None,
        help="cover: start from the source noised to about 1 - this instead of from noise, and run only the "
        "rest of the schedule: 0 (default) to 1 (closest to the source).",
    ),
    click.option(
        "--retake-variance",
        type=float,
        default=None,
        help="Upstream's retake: mix a second seed's noise into the song's, 0 (the song) to 1 (the other "
        "seed's song); small values give variations of a song you like.",
    ),
    click.option(
        "--retake-seed", type=int, default=None, help="The retake's seed (item i uses N + i; default random)."
    ),
    click.option(
        "--dcw/--no-dcw",
        default=None,
        help="Upstream's wavelet correction (DCW) after each step, which upstream chose for turbo by grid search "
        "(default: on for turbo, off for base/SFT, whose longer schedules it garbles; as upstream).",
    ),
    click.option(
        "--dcw-mode",
        type=click.Choice(DCW_MODES),
        default=None,
        help="DCW bands: double (low and high, the default), low, high, or pix (no wavelet).",
    ),
    click.option(
        "--dcw-scaler",
        type=float,
        default=None,
        help="DCW strength (double: the low band's), 0 to 1 (default 0.05).",
    ),
    click.option(
        "--dcw-high-scaler", type=float, default=None, help="DCW strength of double's high band (default 0.02)."
    ),
    click.option(
        "--dcw-wavelet",
        type=click.Choice(DCW_WAVELETS),
        default=None,
        help="DCW wavelet: haar (default; two taps, the sharpest split of the bands) or the smoother, longer "
        "db2, db4, sym4, sym8, coif2 (upstream's choices).",
    ),
    click.option(
        "--lm-codes-prompt",
        type=click.Choice(LM_CODES_PROMPTS),
        default="current",
        show_default=True,
        help="The planner's codes-phase prompt: current (upstream's since April 2026, its guidance against "
        "a bare 'NO USER INPUT'), legacy-uncond (upstream's A/B toggle: guidance against the caption and "
        "lyrics, so it pushes the metadata only), or february (the form 0.4 used; replays of its files take "
        "it).",
    ),
    click.option(
        "--chunk-mask-mode",
        type=click.Choice(CHUNK_MASK_MODES),
        default=None,
        help="repaint/lego: auto (default, as upstream) lets the model find the region; explicit marks it in "
        "the DiT's context (as upstream before March 2026), which holds the edges to the region more tightly.",
    ),
    click.option(
        "--guidance-kind",
        type=click.Choice(GUIDANCE_KINDS),
        default=None,
        help="base/SFT: the guidance: apg (default), adg (upstream's use_adg: guidance on the angle, steadier at "
        "high --guidance) or cfg (plain classifier-free). Turbo has none.",
    ),
    click.option(
        "--cfg-interval",
        type=(float, float),
        default=None,
        metavar="START END",
        help="base/SFT: guide only this share of the schedule, from noise (0) to the end (1): upstream's "
        "cfg_interval_start and _end (default 0 1, every step).",
    ),
    click.option(
        "--timesteps",
        default=None,
        metavar="T,T,...",
        help="A custom schedule, comma-separated from noise to 0, e.g. 0.97,0.76,0.5,0.28,0 (upstream's "
        "timesteps): base/SFT run it as given (its length - 1 is the step count); turbo snaps it to its tables.",
    ),
    click.option(
        "--lm-top-k",
        type=int,
        default=None,
        help="The planner keeps its K likeliest tokens at each draw (default 0: all; 1: always the likeliest).",
    ),
    click.option(
        "--audio-codes",
        default=None,
        metavar="CODES",
        help="Render these 5 Hz codes (<|audio_code_N|> tokens, as upstream's audio_code_string and the VST3 "
        "plugin's custom conditioning send them) instead of the planner's: the song lasts len/5 s. "
        'text2music without the planner. From a file: --audio-codes "$(cat codes.txt)".',
    ),
]


def upstream_sampler_options(fn):
    """`generate`'s newer flags, `_OPTIONS`."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def schedule(params: dict) -> dict:
    """The `timesteps` request field of --timesteps (absent: the model's schedule)."""
    from ..server.custom_fields import timesteps

    value = timesteps(params["timesteps"])  # the REST side's parser: the same text, the same error
    return {} if value is None else {"timesteps": value}
