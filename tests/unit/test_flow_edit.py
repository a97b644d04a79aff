"""Flow-edit through the request, the pipeline, the command line and the REST fields (the algorithm's parity with
upstream: tests/parity/test_upstream_flow_edit.py).

What upstream's overlay does around the loop (`service_generate_flow_edit.py`): text2music runs both sides over the
silence context with no codes, cover / cover-nofsq over the cover's own context; the source side is the target's
items with the source caption and lyrics; the forward noise is seeded from retake_seed, else seed
(`flow_edit_pipeline.py`); DCW, Heun and ADG are turned off (`_warn_about_disabled_v1_tricks`), turbo's guidance
scale forced to 1 (`modeling_acestep_v15_turbo.py`, `flowedit_generate_audio`)."""

import json

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from helpers import assert_one_line_error, run_cli

from mlx_acestep.diffusion.flow_edit import FlowEditSettings
from mlx_acestep.engine import Engine, silence_source
from mlx_acestep.errors import RequestError
from mlx_acestep.pipeline import ACEStep, GenerationRequest, ModelFolders

pytestmark = pytest.mark.filterwarnings("ignore:the source lasts")  # a 5 s song keeps the runs short
SONG = np.random.default_rng(5).standard_normal((130, 64)).astype(np.float32)
EDIT = dict(src_latents=SONG, flow_edit=True, flow_edit_source_caption="synth pop")


@pytest.fixture(scope="module")
def turbo(converted):
    return ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae"))


# -- the request ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, name, needle",
    [
        ({"flow_edit_n_min": -0.1}, "flow_edit_n_min", "must be between 0 and 1, got -0.1"),
        ({"flow_edit_n_max": 1.5}, "flow_edit_n_max", "must be between 0 and 1, got 1.5"),
        ({"flow_edit_n_min": 0.6, "flow_edit_n_max": 0.4}, "flow_edit_n_max", "0.4 is before flow_edit_n_min 0.6"),
        ({"flow_edit_n_avg": 0}, "flow_edit_n_avg", "must be between 1 and 8, got 0"),
        ({"flow_edit_n_avg": 1.5}, "flow_edit_n_avg", "must be a whole number, got 1.5"),
        ({"flow_edit_source_caption": 3}, "flow_edit_source_caption", "must be text"),
        ({"flow_edit_source_caption": None}, "flow_edit_source_caption", "needs what the song is now"),
        ({"flow_edit_source_caption": "piano"}, "flow_edit_source_caption", "needs what the song is now"),
        ({"src_latents": None}, "src_audio", "flow-edit changes a song: give it as src_audio"),
        ({"task": "repaint"}, "task", "runs on text2music, cover, cover-nofsq (as upstream), not repaint"),
        ({"sampler": "heun"}, "sampler", "Euler only"),
        ({"method": "sde"}, "method", "the ODE only"),
        ({"dcw": True}, "dcw", "without DCW"),
        ({"task": "cover", "cover_strength": 0.5}, "cover_strength", "every step on the cover"),
        ({"task": "cover", "cover_noise_strength": 0.3}, "cover_noise_strength", "starts from the song itself"),
        ({"retake_variance": 0.2}, "retake_variance", "mixes no retake noise"),
        ({"thinking": True}, "thinking", "without the planner"),
        ({"flow_edit": False}, "flow_edit_source_caption", "is for flow-edit; turn flow-edit on"),
    ],
)
def test_bad_flow_edit_requests_fail_when_made_naming_the_field(fields, name, needle):
    with pytest.raises(RequestError) as info:
        GenerationRequest("piano", **{**EDIT, **fields})
    assert info.value.name == name and needle in str(info.value) and "\n" not in str(info.value)


def test_turbo_runs_flow_edit_without_dcw_with_its_own_steps_and_shift_as_upstream():
    plain = GenerationRequest("piano").sampler_settings("turbo")
    assert plain.dcw is not None  # turbo's default, which flow-edit turns off as upstream does
    settings = GenerationRequest("piano", steps=6, shift=2.5, **EDIT).sampler_settings("turbo")
    assert isinstance(settings, FlowEditSettings) and settings.dcw is None and not settings.guided
    assert (settings.steps, settings.shift) == (6, 2.5)  # not the 8-step table, not snapped: upstream's linspace
    assert settings.flow(mx.float32).times[:2] == (1.0, pytest.approx(2.5 * (5 / 6) / (1 + 1.5 * (5 / 6))))
    with pytest.raises(RequestError, match="steps must be between 1 and 8 on turbo models, got 12"):
        GenerationRequest("piano", steps=12, **EDIT).sampler_settings("turbo")  # upstream's service: at most 8
    with pytest.warns(UserWarning, match="without guidance"):
        GenerationRequest("piano", guidance=7.0, **EDIT).sampler_settings("turbo")
    base = GenerationRequest("piano", velocity_norm_threshold=0.4, **EDIT)
    base.check_model("base", "acestep-v15-base")  # flow-edit's base goldens hold the clamp and EMA
    assert base.sampler_settings("base").guidance_scale == 7.0 and base.sampler_settings("base").steps == 32


def test_a_flow_edit_follows_its_source_and_runs_without_the_planner():
    request = GenerationRequest("piano", **EDIT)
    assert request.uses_source and request.duration_for(False) is None and not request.thinking_for(True)
    assert not any("retake" in n for n in GenerationRequest("piano", retake_seed=3, **EDIT).notices())


# -- the pipeline ------------------------------------------------------------------------------------


class Spy(Engine):
    """Records the conditions the pipeline makes and what it hands the flow-edit."""

    def __init__(self, silence):
        super().__init__(silence)
        self.seen = {"conditions": []}

    def condition(self, dit, text, job):
        pair = super().condition(dit, text, job)
        self.seen["conditions"].append((job, pair))
        return pair

    def flow_edit(self, dit, source, target, song, settings, seeds, decoder=None):
        self.seen.update(source=source, target=target, song=song, seeds=list(seeds), settings=settings)
        return super().flow_edit(dit, source, target, song, settings, seeds, decoder)


def test_text2music_edits_over_the_silence_context_and_cover_over_its_own(turbo, monkeypatch):
    spy = Spy(turbo.silence_latent)
    monkeypatch.setattr(turbo, "engine", spy)
    out = turbo.generate("jazz trio", seed=4, flow_edit_n_avg=2, **EDIT)
    seen, frames = spy.seen, SONG.shape[0]
    assert out.latents.shape == (1, frames, 64)  # the song's length
    silence = silence_source(turbo.silence_latent, frames, 1, mx.float32)
    for _, context in (seen["source"], seen["target"]):
        assert np.array_equal(np.array(context[..., :64]), np.array(silence))  # text2music's shape, both sides
    assert not np.array_equal(np.array(seen["source"][0]), np.array(seen["target"][0]))  # the captions differ
    assert np.array_equal(np.array(seen["song"][0]), SONG) and seen["seeds"] == [4]
    turbo.generate("jazz trio", seed=4, retake_seed=9, **EDIT)
    assert spy.seen["seeds"] == [9]  # the forward noise is retake_seed's when given, as upstream

    spy.seen["conditions"].clear()
    turbo.generate("jazz trio", seed=4, task="cover", **EDIT)
    (job, _), (source_job, _) = spy.seen["conditions"]
    assert job is source_job and job.covers == [True]  # both sides share the cover's FSQ context
    plain_cover = GenerationRequest("jazz trio", task="cover", src_latents=SONG, seed=4)
    spy.seen["conditions"].clear()
    turbo.generate(plain_cover)
    assert np.array_equal(np.array(spy.seen["conditions"][0][1][1]), np.array(spy.seen["target"][1]))


def test_the_source_side_may_be_empty_and_a_run_repeats_and_differs_from_its_source(turbo):
    a = turbo.generate("jazz trio", seed=4, **EDIT).latents
    assert np.array_equal(a, turbo.generate("jazz trio", seed=4, **EDIT).latents)
    assert np.abs(a - turbo.generate("jazz trio", seed=5, **EDIT).latents).max() > 1e-3  # the forward noise
    empty = turbo.generate("jazz trio", seed=4, **{**EDIT, "flow_edit_source_caption": ""}).latents  # as upstream
    assert np.abs(a - empty).max() > 1e-3


# -- the command line and the REST fields -------------------------------------------------------------


def test_every_flow_edit_flag_reaches_the_request():
    import click

    from mlx_acestep.cli.flow_edit_options import FLOW_EDIT_FIELDS, flow_edit_options

    declared = {p.name for p in flow_edit_options(click.command()(lambda **kw: None)).params}
    assert declared == set(FLOW_EDIT_FIELDS) <= set(GenerationRequest.__dataclass_fields__)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--flow-edit", "--flow-edit-source-caption", "pop"], "flow-edit changes a song: give it as --src-audio"),
        (["--src-audio", "ok.wav", "--flow-edit-n-min", "0.5"], "--flow-edit-n-min is for flow-edit"),
        (["--src-audio", "ok.wav", "--flow-edit", "--flow-edit-n-avg", "9"], "--flow-edit-n-avg must be between 1"),
        (["--src-audio", "ok.wav", "--flow-edit", "--flow-edit-source-lyrics", "la", "--dcw"], "--dcw: flow-edit"),
    ],
)
def test_bad_flow_edit_flags_are_one_line(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write("ok.wav", np.zeros((96000, 2), np.float32), 48000)
    assert_one_line_error(run_cli(["generate", "x", "--model", "tiny", *args, "-o", "out.wav"]), needle)


def test_a_flow_edit_is_recorded_and_replays_bit_for_bit(converted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write("src.wav", np.random.default_rng(3).uniform(-0.3, 0.3, (int(1.2 * 44100), 1)).astype(np.float32), 44100)
    args = ["generate", "jazz trio", "-m", converted, "--src-audio", "src.wav", "--flow-edit", "--seed", 4]
    args += ["--flow-edit-source-caption", "synth pop", "--flow-edit-n-min", "0.25", "--flow-edit-n-avg", "2"]
    first = run_cli([*args, "--retake-seed", "11", "-o", "a.wav"])
    assert first.exit_code == 0, first.output
    meta = json.loads((tmp_path / "a.json").read_text())
    assert meta["flow_edit"] == {
        "source_caption": "synth pop",
        "source_lyrics": "[Instrumental]",
        "window": [0.25, 1.0],
        "n_avg": 2,
        "forward_noise": {"from": "retake_seed", "seed": 11},
    }
    assert meta["sampler"]["dcw"] is None and meta["sampler"]["n_avg"] == 2
    again = run_cli(["generate", "--from-metadata", "a.json", "-o", "b.wav"])
    assert again.exit_code == 0, again.output
    assert (sf.read("a.wav")[0] == sf.read("b.wav")[0]).all()
    assert "--flow-edit-source-caption" in run_cli(["generate", "--help"], env={"COLUMNS": "200"}).output


def test_upstreams_flow_edit_fields_reach_the_request_only_with_flow_edit_morph():
    from mlx_acestep.server.protocol import REST_NAMES, request_fields

    body = {"prompt": "x", "flow_edit_morph": "true", "flow_edit_source_caption": "", "flow_edit_n_min": "0.25"}
    body |= {"flow_edit_n_avg": 2, "inference_steps": 12}
    fields, _ = request_fields(body, "turbo", {})
    assert fields["flow_edit"] is True and fields["flow_edit_source_caption"] == ""  # sent empty: empty, as upstream
    assert (fields["flow_edit_n_min"], fields["flow_edit_n_avg"], fields["steps"]) == (0.25, 2, 8)  # clamped
    assert "flow_edit_source_lyrics" not in fields  # not sent: the target's lyrics
    off = request_fields({**body, "flow_edit_morph": False}, "turbo", {})[0]  # upstream's clients send them all
    assert not any(k.startswith("flow_edit") for k in off) and off["steps"] == 8
    with pytest.raises(RequestError) as info:
        GenerationRequest(**{**request_fields({**body, "flow_edit_n_avg": "many"}, "turbo", {})[0]})
    assert info.value.render(REST_NAMES) == "flow_edit_n_avg must be a whole number, got 'many'"
    with pytest.raises(RequestError) as info:
        GenerationRequest(**request_fields({**body, "task_type": "repaint"}, "turbo", {})[0])
    assert info.value.render(REST_NAMES).startswith("flow-edit runs on text2music")
