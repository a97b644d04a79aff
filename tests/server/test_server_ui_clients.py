"""Two more of upstream's clients over HTTP with the fixture model (issue 29): upstream's bundled studio page
(`ui/studio.html`, last at 8ac1be1^), opened from a file so that its requests carry `Origin: null`, and
fspecii/ace-step-ui's REST client (its `server/src/services/acestep.ts` before the Gradio rewrite, 193cf70), whose
JSON bodies carry every field its panel has. Bodies are shaped as those clients send them."""

import io
import uuid

import numpy as np
import pytest
import soundfile as sf

from mlx_acestep.pipeline import ACEStep, GenerationRequest, ModelFolders
from mlx_acestep.planner import tasks

CODES = [int(c) for c in np.random.default_rng(1).integers(0, 64, 50)]  # 50 codes at 5 Hz: 10 s
CODE_TEXT = "".join(f"<|audio_code_{c}|>" for c in CODES)
UPSTREAM_DEFAULT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"  # constants.py:129


def ace_step_ui_body(**fields) -> dict:
    """submitToApi's body for the panel's defaults (CreatePanel.tsx:131-212): a fixed seed, a 10 s song."""
    body = {"prompt": "rock", "lyrics": "", "batch_size": 1, "inference_steps": 12, "guidance_scale": 9.0}
    body |= {"audio_format": "flac", "vocal_language": "en", "use_random_seed": False, "seed": 7, "shift": 3.0}
    body |= {"thinking": False, "use_cot_caption": False, "use_cot_language": False, "use_cot_metas": False}
    body |= {"lm_backend": "pt", "lm_model_path": "acestep-5Hz-lm-0.6B", "audio_duration": 10}
    return body | {"instruction": UPSTREAM_DEFAULT_INSTRUCTION} | fields


@pytest.fixture(scope="module")
def pipe(converted):
    c = converted
    return ACEStep(
        ModelFolders(c / "Qwen3-Embedding-0.6B", c / "acestep-v15-turbo", c / "vae", c / "acestep-5Hz-lm-0.6B")
    )


@pytest.fixture(autouse=True)
def short_answers(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TOKENS", 120)  # the tiny LM rambles to upstream's 3500 tokens otherwise


def studio_form(fields: dict) -> tuple[bytes, str]:
    """The studio's FormData: every value a string."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def test_the_studio_page_opened_from_a_file_runs_with_cors_origin_null(pipe, serve, tmp_path):
    """A page opened from file:// sends `Origin: null`; upstream lets it in (api/route_setup.py:64), here
    `--cors-origin null` does, and no other origin gets the header."""
    from mlx_acestep.errors import AceStepError
    from mlx_acestep.server import make_app

    server = serve(make_app(pipe, tmp_path / "out", cors_origins=["null"]))
    with pytest.raises(AceStepError, match="null for a page opened from a file"):
        make_app(pipe, tmp_path / "out", cors_origins=["file://"])
    ask = {"Origin": "null", "Access-Control-Request-Method": "POST"}
    r = server.client.options("/release_task", headers=ask)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "null"
    # the studio's text2music form (studio.html:800-827): thinking on, mp3 by upstream's default
    form = {"task_type": "text2music", "prompt": "lofi piano", "lyrics": "[Instrumental]", "vocal_language": "en"}
    form |= {"thinking": "true", "batch_size": 1, "inference_steps": 8, "guidance_scale": 7.0, "audio_duration": 10}
    raw, kind = studio_form(form | {"audio_cover_strength": 1.0})
    r = server.client.post("/release_task", content=raw, headers={"Content-Type": kind, "Origin": "null"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "null", r.text
    answer = r.json()
    assert answer["code"] == 200 and answer["data"]["task_id"]  # what the page checks (studio.html:829)
    state, items = server.wait(answer["data"]["task_id"])
    assert state == 1, items
    r = server.client.get(items[0]["file"])  # the page's <audio src> (studio.html:905-906)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg" and len(r.content) > 1000
    r = server.client.get("/health", headers={"Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in r.headers


def test_ace_step_uis_cover_of_audio_codes_renders_the_codes(pipe, serve, tmp_path):
    """ace-step-ui's cover from audio codes, with no source (its guard: a cover needs a source or codes): upstream
    decodes the codes into the target whatever the task (conditioning_target.py:77-86), so it is the song the
    pipeline renders from those codes."""
    from mlx_acestep.server import make_app

    server = serve(make_app(pipe, tmp_path / "out"))
    body = ace_step_ui_body(task_type="cover", audio_code_string=CODE_TEXT, audio_cover_strength=1.0)
    status, env = server.json("POST", "/release_task", body)
    assert status == 200, env
    state, items = server.wait(env["data"]["task_id"])
    assert state == 1, items
    status, data, _ = server.call("GET", items[0]["file"])
    served = sf.read(io.BytesIO(data), dtype="float32")[0]
    same = dict(caption="rock", seed=7, steps=8, shift=3.0, language="en", thinking=False)  # turbo: 12 steps -> 8
    direct = pipe.generate(GenerationRequest(audio_codes=CODES, **same))
    expected = sf.read(direct.save(tmp_path / "direct.flac", overwrite=True)[0], dtype="float32")[0]
    np.testing.assert_allclose(served, expected, atol=1e-4)
    other = pipe.generate(GenerationRequest(audio_codes=CODES[::-1], **same))
    other = sf.read(other.save(tmp_path / "other.flac", overwrite=True)[0], dtype="float32")[0]
    assert np.abs(served - other).max() > 1e-2  # the codes steer the song
    status, env = server.json("POST", "/release_task", ace_step_ui_body(task_type="cover"))
    assert status == 400 and "src_audio" in env["detail"], env  # neither source nor codes: still refused


def test_a_path_refused_is_named_as_the_client_sent_it(pipe, serve, tmp_path):
    """ace-step-ui sends its own folder's absolute paths; without --input-dir the 403 names its field."""
    from mlx_acestep.server import make_app

    server = serve(make_app(pipe, tmp_path / "out"))
    song = str(tmp_path / "song.wav")
    for field in ("reference_audio_path", "src_audio_path"):
        status, env = server.json("POST", "/release_task", ace_step_ui_body(**{field: song}))
        assert status == 403 and env["detail"].startswith(f"{field} paths are not allowed here"), env
