"""GenerationRequest: one validation for the CLI and the API, checked without any model."""

import numpy as np
import pytest

from mlx_acestep.errors import AceStepError, RequestError
from mlx_acestep.pipeline.request import GenerationRequest, resolve_seeds


def test_whole_numbers_may_come_as_floats_and_are_stored_as_ints():
    r = GenerationRequest("piano", bpm=120.0, steps=8.0, batch_size=2.0)
    assert (r.bpm, r.steps, r.batch_size) == (120, 8, 2) and all(type(v) is int for v in (r.bpm, r.steps, r.batch_size))
    with pytest.raises(RequestError, match="bpm must be a whole number, got 120.5"):
        GenerationRequest("piano", bpm=120.5)


def test_seeds_may_be_a_numpy_array():
    r = GenerationRequest("piano", seed=np.array([3, 9]), batch_size=2)
    assert resolve_seeds(r.seed, 2) == [3, 9]
    with pytest.raises(RequestError, match="got 3 seeds for a batch of 2"):
        GenerationRequest("piano", seed=np.array([1, 2, 3]), batch_size=2)


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(task="cover", src_audio="song{1}.wav"), "src_audio"),
        (dict(method="{m}"), "method"),
        (dict(duration="{d}"), "duration"),
        (dict(task="repaint", src_latents=np.zeros((10, 64)), repaint_mode="{name}"), "repaint_mode"),
    ],
)
def test_braces_in_user_data_are_shown_not_formatted(fields, field):
    """The error templates hold user data; a `{...}` in it must neither crash nor be rewritten."""
    with pytest.raises(RequestError) as info:
        GenerationRequest("piano", **fields)
    assert info.value.name == field
    assert str(fields[field]) in str(info.value) and "\n" not in str(info.value)
    assert str(fields[field]) in info.value.render({field: "--flag", "task": "--task"})


def test_errors_name_the_field_or_the_flag():
    with pytest.raises(RequestError) as info:
        GenerationRequest("piano", src_audio="x.wav")
    assert str(info.value) == "src_audio is for the editing tasks (choose one with task) and flow-edit"
    assert (
        info.value.render({"src_audio": "--src-audio", "task": "--task"})
        == "--src-audio is for the editing tasks (choose one with --task) and flow-edit"
    )
    for fields, flag_message in [
        (
            dict(task="cover", src_latents=np.zeros((10, 64)), cover_strength=2),
            "--cover-strength must be between 0 and 1",
        ),
        (dict(task="extract", src_latents=np.zeros((10, 64)), track="kazoo"), "unknown track 'kazoo'"),
        (dict(task="cover", src_latents=np.zeros((10, 64)), repaint_mode="wild"), "unknown repaint mode 'wild'"),
    ]:
        with pytest.raises(RequestError) as info:
            GenerationRequest("piano", **fields)
        assert flag_message in info.value.render({"cover_strength": "--cover-strength"})


def test_what_no_duration_means():
    """Once: an editing task follows its source, the planner chooses when thinking, else 30 s."""
    plain = GenerationRequest("piano")
    assert plain.duration_for(thinking=False) == 30.0 and plain.duration_for(thinking=True) is None
    edit = GenerationRequest("piano", task="cover", src_latents=np.zeros((10, 64)))
    assert edit.duration_for(thinking=False) is None
    assert GenerationRequest("piano", duration=12).duration_for(thinking=True) == 12.0
    assert plain.thinking_for(has_planner=True) and not plain.thinking_for(has_planner=False)
    assert not edit.thinking_for(has_planner=True)
    with pytest.raises(AceStepError, match="thinking needs the planner LM"):
        GenerationRequest("piano", thinking=True).thinking_for(has_planner=False)


def test_base_only_tasks_name_the_base_dit():
    r = GenerationRequest("piano", task="lego", src_latents=np.zeros((10, 64)))
    assert r.required_dit == "acestep-v15-base" and GenerationRequest("piano").required_dit is None
    with pytest.raises(RequestError, match=r"the lego task needs a base model \(acestep-v15-base\)"):
        r.check_model("turbo", "acestep-v15-turbo")


def test_dcw_follows_upstreams_rule_per_model_family_and_takes_every_setting():
    """Upstream since August 2026 (PR #1273): no choice means DCW on for turbo DiTs, off for base / SFT."""
    from mlx_acestep.diffusion.dcw import DCW

    plain = GenerationRequest("x")
    assert plain.sampler_settings("turbo").dcw == DCW("double", 0.05, 0.02, "haar")  # upstream's defaults
    assert plain.sampler_settings("base").dcw is None and plain.sampler_settings("sft").dcw is None
    assert GenerationRequest("x", dcw=False).sampler_settings("turbo").dcw is None
    chosen = GenerationRequest("x", dcw=True, dcw_mode="low", dcw_scaler=0.08).sampler_settings("base").dcw
    assert chosen == DCW("low", 0.08, 0.02, "haar")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dcw_mode", "mid", "unknown DCW mode .mid. \\(choose low, high, double or pix\\)"),
        ("dcw_scaler", 2.0, "dcw_scaler must be between 0 and 1"),
        ("dcw_high_scaler", float("nan"), "dcw_high_scaler"),
        ("dcw_wavelet", "db5", "unknown DCW wavelet .db5. \\(choose haar, db2, db4, sym4, sym8 or coif2\\)"),
        ("dcw", "yes", "dcw"),
    ],
)
def test_bad_dcw_settings_are_refused_when_the_request_is_made(field, value, message):
    with pytest.raises(RequestError, match=message):
        GenerationRequest("x", **{field: value})


def test_the_newer_sampler_options_are_checked_when_the_request_is_made():
    settings = GenerationRequest("x", sampler="heun", velocity_norm_threshold=0.4).sampler_settings("turbo")
    assert (settings.solver, settings.velocity_norm_threshold, settings.velocity_ema_factor) == ("heun", 0.4, 0.0)
    with pytest.raises(RequestError, match=r"the heun sampler runs the ODE only \(method ode\)"):
        GenerationRequest("x", sampler="heun", method="sde")
    with pytest.raises(RequestError, match="velocity_ema_factor must be between 0 and 0.99"):
        GenerationRequest("x", velocity_ema_factor=1.0)
    # base / SFT run them too (goldens of upstream's base loop: tests/parity/test_upstream_base.py)
    for family in ("base", "sft"):
        request = GenerationRequest("x", sampler="heun", velocity_norm_threshold=0.4, velocity_ema_factor=0.2)
        request.check_model(family, f"acestep-v15-{family}")
        settings = request.sampler_settings(family)
        assert (settings.solver, settings.velocity_norm_threshold, settings.velocity_ema_factor) == ("heun", 0.4, 0.2)


def test_audio_codes_set_the_length_and_keep_the_planner_off():
    """Upstream renders given codes over their own length (5 latent frames, 0.2 s, per code) and skips the planner's
    codes (inference.py:562-570)."""
    from mlx_acestep.pipeline.custom import parse_codes

    request = GenerationRequest("", empty_caption=True, audio_codes="<|audio_code_3|>\n<|audio_code_4|>" * 100)
    assert request.audio_codes == (3, 4) * 100 and request.duration_for(False) == 40.0
    assert request.thinking_for(True) is False
    assert GenerationRequest("x", audio_codes=[1, 2]).duration_for(False) == 5.12  # the DiT's shortest, 128 frames
    assert parse_codes("  ") is None and parse_codes([]) is None
    for bad, needle in (
        ("<|audio_code_-1|>", "tokens only"),
        ("audio_code_5", "tokens only"),
        ([1.5], "whole numbers"),
        (7, "text or whole numbers"),
    ):
        with pytest.raises(RequestError, match=needle):
            GenerationRequest("x", audio_codes=bad)
    with pytest.raises(RequestError, match="audio_codes are for text2music"):
        GenerationRequest("x", audio_codes=[1], task="cover", src_audio=np.zeros((48000 * 12, 2), np.float32))
