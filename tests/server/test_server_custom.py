"""Upstream's custom sampling and conditioning over HTTP with the fixture model, each compared with the pipeline
called directly with the same options: the VST3 plugin's custom-conditioning mode (`prompt: ""` with
`audio_code_string`), ADG / the guidance interval / a custom schedule on the base DiT, and the modes that answer
without audio (`extract_codes_only`, `full_analysis_only`, `analysis_only`: upstream's job_analysis_runtime.py)."""

import io

import numpy as np
import pytest
import soundfile as sf

from mlx_acestep.pipeline import ACEStep, GenerationRequest, ModelFolders
from mlx_acestep.planner import tasks

# The plugin's request in custom-conditioning mode (PluginBackendClient.cpp, shared/spec/UPSTREAM-2026.md 2).
PLUGIN = {"task_type": "text2music", "batch_size": 1, "audio_format": "wav", "thinking": False}
PLUGIN |= {"use_random_seed": False, "seed": 7, "inference_steps": 8, "guidance_scale": 7.0, "audio_duration": 30}
CODES = [int(c) for c in np.random.default_rng(0).integers(0, 64, 30)]  # 30 codes at 5 Hz: 6 s
CODE_TEXT = "".join(f"<|audio_code_{c}|>" for c in CODES)


def _folders(c, dit, lm=None):
    return ModelFolders(c / "Qwen3-Embedding-0.6B", c / dit, c / "vae", lm and c / lm)


@pytest.fixture(scope="module")
def turbo(converted, serve, tmp_path_factory):
    from mlx_acestep.server import make_app

    root = tmp_path_factory.mktemp("served")
    (root / "inputs").mkdir()
    pipe = ACEStep(_folders(converted, "acestep-v15-turbo", "acestep-5Hz-lm-0.6B"))
    client = serve(make_app(pipe, root / "out", input_dirs=[root / "inputs"]))
    client.pipe, client.root = pipe, root
    return client


@pytest.fixture(autouse=True)
def short_answers(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TOKENS", 120)  # the tiny LM rambles to upstream's 3500 tokens otherwise


def _rendered(client, body) -> np.ndarray:
    status, env = client.json("POST", "/release_task", body)
    assert status == 200, env
    state, items = client.wait(env["data"]["task_id"])
    assert state == 1, items
    status, data, _ = client.call("GET", items[0]["file"])
    return sf.read(io.BytesIO(data), dtype="float32")[0]


def _direct(pipe, tmp_path, **fields) -> np.ndarray:
    """The same song from the pipeline, written as the server writes it (a WAV)."""
    result = pipe.generate(GenerationRequest(**fields))
    return sf.read(result.save(tmp_path / "direct.wav", overwrite=True)[0], dtype="float32")[0]


def test_the_plugins_custom_conditioning_renders_its_codes(turbo, tmp_path, monkeypatch):
    """The codes become the DiT's context through the detokenizer as the planner's do, with cover's instruction
    (upstream turns text2music with codes into a cover of them: generate_music_request.py:54-55), over the codes'
    length (conditioning_target.py:78-84), whatever audio_duration says."""
    seen = []
    condition = turbo.pipe.engine.condition

    def spy(dit, text, job):
        seen.append((job.codes.tolist() if job.codes is not None else None, job.items[0].instruction, job.frames))
        return condition(dit, text, job)

    monkeypatch.setattr(turbo.pipe.engine, "condition", spy)
    served = _rendered(turbo, PLUGIN | {"prompt": "", "audio_code_string": CODE_TEXT})
    assert seen == [([CODES], "Generate audio semantic tokens based on the given conditions:", 150)]
    assert served.shape == (6 * 48000, 2)
    same = dict(caption="", empty_caption=True, seed=7, steps=8, language="en", thinking=False)
    np.testing.assert_allclose(served, _direct(turbo.pipe, tmp_path, audio_codes=CODES, **same), atol=1e-4)
    other = _direct(turbo.pipe, tmp_path, audio_codes=CODES[::-1], **same)
    assert np.abs(served - other).max() > 1e-2  # the codes steer the song


def test_the_planners_top_k_and_upstreams_top_p(turbo, tmp_path):
    """lm_top_k reaches the planner's sampling; lm_top_p 1 is upstream's 0.9 (llm_generation_inputs.py:64-65)."""
    body = {"prompt": "calm", "audio_duration": 10, "batch_size": 1, "use_random_seed": False, "seed": 3}
    served = _rendered(turbo, body | {"audio_format": "wav", "thinking": True, "lm_top_k": 3, "lm_top_p": 1.0})
    same = dict(caption="calm", duration=10, seed=3, language="en", thinking=True, steps=8, lm_cfg_scale=2.5)
    np.testing.assert_allclose(served, _direct(turbo.pipe, tmp_path, lm_top_k=3, lm_top_p=0.9, **same), atol=1e-4)
    assert np.abs(served - _direct(turbo.pipe, tmp_path, lm_top_p=0.9, **same)).max() > 1e-2  # top-k counted


@pytest.mark.parametrize(
    "codes, needle",
    [
        ("<|audio_code_5|> and more", "audio_code_string must be <|audio_code_N|> tokens only, found 'and'"),
        ("<|audio_code_99999|>", "audio_code_string go up to"),
    ],
)
def test_malformed_codes_are_one_line_400s(turbo, codes, needle):
    status, env = turbo.json("POST", "/release_task", PLUGIN | {"prompt": "", "audio_code_string": codes})
    assert status == 400 and needle in env["detail"], env


def test_adg_the_interval_and_a_custom_schedule_on_the_base_dit(converted, serve, tmp_path):
    from mlx_acestep.server import make_app

    pipe = ACEStep(_folders(converted, "acestep-v15-base"))
    client = serve(make_app(pipe, tmp_path / "out"))
    body = {"prompt": "lofi", "audio_duration": 10, "batch_size": 1, "use_random_seed": "false", "seed": "3"}
    body |= {"audio_format": "wav", "use_adg": "true", "cfg_interval_start": "0.2", "timesteps": "0.9,0.6,0.3,0"}
    served = _rendered(client, body)
    same = dict(caption="lofi", duration=10, seed=3, language="en", thinking=False, steps=8)
    custom = dict(guidance_kind="adg", cfg_interval=(0.2, 1.0), timesteps=[0.9, 0.6, 0.3, 0.0])
    np.testing.assert_allclose(served, _direct(pipe, tmp_path, **same, **custom), atol=1e-4)
    assert np.abs(served - _direct(pipe, tmp_path, **same)).max() > 1e-2  # the options change the song


def _sine(path, seconds=12.0):
    t = np.arange(int(seconds * 48000)) / 48000
    sf.write(path, np.stack([np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32) * 0.5, 48000)
    return path


def _answer(client, body) -> dict:
    status, env = client.json("POST", "/release_task", body)
    assert status == 200, env
    state, items = client.wait(env["data"]["task_id"])
    assert state == 1 and len(items) == 1, items
    return items[0]


def test_extract_codes_only_answers_the_sources_codes(turbo):
    """The VAE's draw seeded as the task's seed (upstream's draw is unseeded), then the FSQ tokenizer."""
    source = _sine(turbo.root / "inputs" / "song.wav", seconds=1.0)  # short: the VAE encode is most of the test
    body = {"extract_codes_only": "true", "src_audio_path": str(source), "use_random_seed": False, "seed": 42}
    item = _answer(turbo, body)
    assert item["status_message"] == "Audio Codes Extraction Success" and item["audio_paths"] == []
    direct = turbo.pipe.audio_codes(source, seed=42)
    assert item["audio_codes"] == "".join(f"<|audio_code_{c}|>" for c in direct)
    assert len(direct) == 1 * 5  # 5 Hz


def test_full_analysis_only_describes_the_source(turbo):
    source = _sine(turbo.root / "inputs" / "tune.wav", seconds=1.0)  # short: the VAE encode is most of the test
    body = {"full_analysis_only": True, "src_audio_path": str(source), "use_random_seed": False, "seed": 42}
    item = _answer(turbo, body)
    sheet = turbo.pipe.understand(source, seed=42)
    assert item["status_message"] == "Full Hardware Analysis Success"
    assert item["audio_codes"] == tasks.codes_input(sheet.codes)
    assert (item["prompt"], item["lyrics"], item["bpm"], item["duration"]) == (
        sheet.caption,
        sheet.lyrics,
        sheet.bpm,
        sheet.duration,
    )


def test_analysis_only_answers_the_planners_metadata(turbo):
    body = {"analysis_only": True, "prompt": "calm piano", "lyrics": "[verse]\nla", "seed": 5}
    item = _answer(turbo, body | {"use_random_seed": False, "lm_temperature": 0.7})
    metas = turbo.pipe.think("calm piano", "[verse]\nla", temperature=0.7, top_p=0.9, seed=5)
    assert item["file"] == "" and item["dit_model"] == "None (Analysis Only)"
    assert item["metas"]["bpm"] == metas.get("bpm") and item["prompt"] == (metas.get("caption") or "calm piano")


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"extract_codes_only": True}, "extract_codes_only needs the source audio"),
        ({"full_analysis_only": "yes"}, "full_analysis_only needs the source audio"),
        ({"analysis_only": "perhaps"}, "analysis_only must be true or false"),
        ({"analysis_only": True, "lm_temperature": "hot"}, "lm_temperature must be a number"),
        ({"analysis_only": True, "lm_temperature": -1}, "lm_temperature must be between 0 and 10"),
    ],
)
def test_an_analysis_without_what_it_needs_is_a_400(turbo, body, needle):
    status, env = turbo.json("POST", "/release_task", body)
    assert status == 400 and needle in env["detail"], env
