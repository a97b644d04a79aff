"""Every /release_task field of upstream's REST table (shared/spec/UPSTREAM-API.md 3.1, with the aliases its
parser had by 6d467e4: release_task_param_parser.py:9-45): each alias reaches its own field, and a task that leaves
a field out runs with upstream's REST default (not always its Python API's: batch 2, 8 steps on every model, the
planner's CFG 2.5, MP3). The table is typed here from the spec: the expectation is upstream's, not our code's."""

import pytest

from mlx_acestep.pipeline.request import GenerationRequest
from mlx_acestep.server.protocol import ALIASES, lookup, request_fields

# (REST field, its aliases, upstream's REST default, how the default shows in what we run)
SPEC = [
    ("prompt", ("caption",), "", lambda r, s, fmt: r.caption == "" and r.empty_caption),
    ("lyrics", (), "", lambda r, s, fmt: r.lyrics == "[Instrumental]"),  # empty => instrumental
    (
        "audio_duration",
        ("duration", "audioDuration", "target_duration", "targetDuration"),
        None,
        lambda r, s, fmt: r.duration == 120.0,  # automatic: 120 s without the planner (padding_utils.py:76-88)
    ),
    ("bpm", (), None, lambda r, s, fmt: r.bpm is None),
    ("key_scale", ("keyscale", "keyScale", "key"), "", lambda r, s, fmt: r.key is None),
    ("time_signature", ("timesignature", "timeSignature"), "", lambda r, s, fmt: r.time_signature is None),
    ("vocal_language", ("vocalLanguage", "language"), "en", lambda r, s, fmt: r.language == "en"),
    ("batch_size", (), 2, lambda r, s, fmt: r.batch_size == 2),
    ("inference_steps", ("inferenceSteps",), 8, lambda r, s, fmt: r.steps == 8 and s.steps == 8),
    ("guidance_scale", ("guidanceScale",), 7.0, lambda r, s, fmt: s.guidance_scale == 7.0),
    ("shift", (), 3.0, lambda r, s, fmt: s.shift == 3.0),
    ("infer_method", ("inferMethod",), "ode", lambda r, s, fmt: r.method == "ode"),
    ("use_adg", (), False, lambda r, s, fmt: r.guidance_kind == "apg" and s.guidance == "apg"),
    ("cfg_interval_start", (), 0.0, lambda r, s, fmt: r.cfg_interval[0] == 0.0 and s.cfg_interval[0] == 0.0),
    ("cfg_interval_end", (), 1.0, lambda r, s, fmt: r.cfg_interval[1] == 1.0 and s.cfg_interval[1] == 1.0),
    ("seed", (), -1, lambda r, s, fmt: r.seed is None),  # random
    ("use_random_seed", ("useRandomSeed",), True, None),
    ("task_type", ("taskType",), "text2music", lambda r, s, fmt: r.task == "text2music"),
    (
        "instruction",
        (),
        "Fill the audio semantic mask based on the given conditions:",
        lambda r, s, fmt: (
            r.instruction is None
            and r.job.instruction() == "Fill the audio semantic mask based on the given conditions:"
        ),
    ),
    ("src_audio_path", ("ctx_audio_path", "sourceAudioPath", "srcAudioPath", "ctxAudioPath"), None, None),
    ("reference_audio_path", ("ref_audio_path", "referenceAudioPath", "refAudioPath"), None, None),
    ("repainting_start", (), 0.0, lambda r, s, fmt: r.repaint_start == 0.0),
    ("repainting_end", (), None, lambda r, s, fmt: r.repaint_end is None),
    ("audio_cover_strength", ("audioCoverStrength",), 1.0, lambda r, s, fmt: r.cover_strength == 1.0),
    ("thinking", (), False, lambda r, s, fmt: r.thinking is False),
    ("sample_mode", ("sampleMode",), False, lambda r, s, fmt: r.sample is None),
    ("sample_query", ("sampleQuery", "description", "desc"), "", lambda r, s, fmt: r.sample is None),
    ("use_format", ("useFormat", "format"), False, lambda r, s, fmt: r.format is False),
    ("use_cot_caption", ("cot_caption", "cot-caption"), True, None),
    ("use_cot_language", ("cot_language", "cot-language"), True, None),
    ("lm_temperature", (), 0.85, lambda r, s, fmt: r.lm_temperature == 0.85),
    ("lm_cfg_scale", (), 2.5, lambda r, s, fmt: r.lm_cfg_scale == 2.5),
    ("lm_top_k", (), None, lambda r, s, fmt: r.lm_top_k == 0),  # off
    ("lm_top_p", (), 0.9, lambda r, s, fmt: r.lm_top_p == 0.9),
    ("lm_negative_prompt", (), "NO USER INPUT", lambda r, s, fmt: r.negative_prompt == "NO USER INPUT"),
    ("constrained_decoding", ("constrainedDecoding", "constrained"), True, None),
    ("constrained_decoding_debug", ("constrainedDecodingDebug",), False, None),
    ("allow_lm_batch", ("allowLmBatch", "parallel_thinking"), True, None),
    ("is_format_caption", ("isFormatCaption",), False, None),
    ("use_tiled_decode", ("useTiledDecode",), True, None),
    ("audio_format", (), "mp3", lambda r, s, fmt: fmt == ("mp3", None)),
    ("model", ("model_name", "modelName", "dit_model", "ditModel"), None, None),
    ("analysis_only", ("analysisOnly",), False, None),
    ("full_analysis_only", ("fullAnalysisOnly",), False, None),
    ("timesteps", (), None, lambda r, s, fmt: r.timesteps is None and s.timesteps is None),
    ("audio_code_string", ("audioCodeString", "audio_codes"), None, lambda r, s, fmt: r.audio_codes is None),
    ("extract_codes_only", ("extractCodesOnly",), False, None),
    # fields upstream's REST gained after the spec's commit (release_task_models.py at 6d467e4)
    ("cover_noise_strength", ("coverNoiseStrength",), 0.0, lambda r, s, fmt: r.cover_noise_strength == 0.0),
    ("chunk_mask_mode", (), "auto", lambda r, s, fmt: r.chunk_mask_mode == "auto"),
    ("repaint_mode", (), "balanced", lambda r, s, fmt: r.repaint_mode == "balanced"),
    ("repaint_strength", (), 0.5, lambda r, s, fmt: r.repaint_strength == 0.5),
    # read by upstream's REST, then replaced by the mode's values (generate_music.py:382-384): the mode's here too
    ("repaint_latent_crossfade_frames", (), 10, lambda r, s, fmt: r.repaint_latent_crossfade_frames is None),
    ("repaint_wav_crossfade_sec", (), 0.0, lambda r, s, fmt: r.repaint_wav_crossfade_sec is None),
    ("track_name", ("trackName",), None, lambda r, s, fmt: r.track is None),
    ("global_caption", (), "", lambda r, s, fmt: r.global_caption == ""),  # release_task_models.py:20
    ("track_classes", ("trackClasses", "instruments"), None, lambda r, s, fmt: r.tracks is None),
]


@pytest.mark.parametrize("field, aliases", [(f, a) for f, a, _, _ in SPEC])
def test_every_alias_reaches_its_own_field(field, aliases):
    assert field in ALIASES, f"{field} is not read"
    for alias in (field, *aliases):
        assert lookup({alias: "sentinel"}).get(field) == "sentinel", alias
        assert lookup({"param_obj": f'{{"{alias}": "sentinel"}}'}).get(field) == "sentinel", alias
        assert lookup({"metas": {alias: "sentinel"}}).get(field) == "sentinel", alias


@pytest.mark.parametrize("family", ["turbo", "base"])
def test_a_task_without_the_field_runs_with_upstreams_rest_default(family):
    fields, fmt = request_fields({}, family, {})
    request = GenerationRequest(**fields)
    settings = request.sampler_settings(family)
    for field, _, default, shows in SPEC:
        turbo_has_no_cfg = family == "turbo" and field in (
            "guidance_scale",
            "use_adg",
            "cfg_interval_start",
            "cfg_interval_end",
        )
        if shows is not None and not turbo_has_no_cfg:
            assert shows(request, settings, fmt), (field, default)


def _effective(body: dict):
    """What a body runs: the request (its sampler numbers as the settings they resolve to) and the output."""
    fields, fmt = request_fields(body, "base", {})
    request = GenerationRequest(**fields)
    settings = request.sampler_settings("base")
    return request.replace(shift=None, guidance=None), settings, fmt


@pytest.mark.parametrize("field, _a, default, _s", [row for row in SPEC if row[2] is not None])
def test_upstreams_default_sent_is_the_same_task_as_left_out(field, _a, default, _s):
    """A client that sends every default (the plugin, the DAW) is never refused for one, nor gets another task."""
    assert _effective({field: default}) == _effective({})


UPSTREAM_SCHEDULE = "0.97,0.76,0.615,0.5,0.395,0.28,0.18,0.085,0"  # release_task_models.py:98's example


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"use_adg": "true"}, {"guidance_kind": "adg"}),
        ({"use_adg": False}, {"guidance_kind": "apg"}),
        ({"cfg_interval_start": 0.2, "cfg_interval_end": "0.8"}, {"cfg_interval": (0.2, 0.8)}),
        ({"timesteps": UPSTREAM_SCHEDULE}, {"timesteps": (0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0.0)}),
        ({"timesteps": ""}, {"timesteps": None}),
        ({"lm_top_k": 40}, {"lm_top_k": 40}),
        ({"lm_top_k": "-3"}, {"lm_top_k": 0}),  # llm_generation_inputs.py:64: 0 or less is off
        ({"lm_top_p": 1.0}, {"lm_top_p": 0.9}),  # :65: 1 and above, and 0, mean upstream's 0.9
        ({"lm_top_p": 0}, {"lm_top_p": 0.9}),
        ({"lm_top_p": 1.5}, {"lm_top_p": 0.9}),
        ({"lm_top_p": "0.5"}, {"lm_top_p": 0.5}),
        ({"audio_code_string": "<|audio_code_5|><|audio_code_63999|>"}, {"audio_codes": (5, 63999)}),
        ({"audioCodeString": "  "}, {"audio_codes": None}),
        ({"retake_variance": "0.3", "retake_seed": "11"}, {"retake_variance": 0.3, "retake_seed": 11}),  # extension
        ({"retakeSeed": "4,5", "batch_size": 2}, {"retake_seed": [4, 5]}),
    ],
)
def test_the_custom_fields_map_as_upstreams(body, expected):
    fields, _ = request_fields({"prompt": "x"} | body, "base", {})
    request = GenerationRequest(**fields)
    assert {name: getattr(request, name) for name in expected} == expected


def test_custom_timesteps_and_adg_reach_the_sampler():
    """Base: the schedule verbatim, its length the step count (modeling_acestep_v15_base.py:1945-1947), ADG in the
    interval; turbo: the times snapped to its tables' values (as its model does)."""
    body = {"prompt": "x", "timesteps": UPSTREAM_SCHEDULE, "use_adg": True, "cfg_interval_start": 0.1}
    fields, _ = request_fields(body, "base", {})
    base = GenerationRequest(**fields).sampler_settings("base")
    assert base.steps == 8 and base.guidance == "adg" and base.cfg_interval == (0.1, 1.0)
    assert base.timesteps == [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0.0]
    fields, _ = request_fields(body, "turbo", {})
    turbo = GenerationRequest(**fields).sampler_settings("turbo")
    assert turbo.timesteps == [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0.0]


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"timesteps": "0.9,abc,0"}, "timesteps must be comma-separated numbers"),
        ({"timesteps": "1.5,0"}, "timesteps must be numbers from 0 to 1"),
        ({"lm_top_k": "many"}, "lm_top_k must be a whole number"),
        ({"cfg_interval_start": "abc"}, "cfg_interval_start must be a number"),
        ({"cfg_interval_start": 0.9, "cfg_interval_end": 0.1}, "cfg_interval_start / cfg_interval_end must be"),
        ({"use_adg": "maybe"}, "use_adg must be true or false"),
        ({"retake_variance": 1.5}, "retake_variance must be between 0 and 1"),
        ({"retake_seed": "x", "retake_variance": 0.5}, "retake_seed"),
        ({"audio_code_string": "<|audio_code_5|>hello"}, "audio_code_string must be <|audio_code_N|> tokens only"),
        ({"audio_code_string": "<|audio_code_5|>", "thinking": True}, "thinking writes the codes itself"),
    ],
)
def test_a_bad_custom_value_is_refused_naming_its_rest_field(body, needle):
    from mlx_acestep.errors import FieldError
    from mlx_acestep.server.protocol import REST_NAMES

    with pytest.raises(FieldError) as e:
        fields, _ = request_fields({"prompt": "x"} | body, "base", {})
        GenerationRequest(**fields)
    assert needle in e.value.render(REST_NAMES)


def test_explicit_crossfades_reach_a_repaint_and_nothing_else(tmp_path):
    """Values other than upstream's defaults are used (an extension: upstream drops them); with a task that has no
    region they mean nothing, as chunk_mask_mode, and are left out; a bad one reaches the request to be refused."""
    source = {"src_audio": tmp_path / "a.wav"}
    body = {"task_type": "repaint", "repaint_latent_crossfade_frames": "4", "repaint_wav_crossfade_sec": "0.2"}
    fields, _ = request_fields(body, "turbo", source)
    assert (fields["repaint_latent_crossfade_frames"], fields["repaint_wav_crossfade_sec"]) == (4, 0.2)
    fields, _ = request_fields(body | {"task_type": "cover"}, "turbo", source)
    assert "repaint_latent_crossfade_frames" not in fields and "repaint_wav_crossfade_sec" not in fields
    fields, _ = request_fields({"task_type": "repaint", "repaint_latent_crossfade_frames": "4.5"}, "turbo", source)
    assert fields["repaint_latent_crossfade_frames"] == "4.5"
