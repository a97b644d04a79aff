"""Two more of upstream's clients over HTTP with the fixture model (issue 29): upstream's bundled studio page
(`ui/studio.html`, last at 8ac1be1^), opened from a file so that its requests carry `Origin: null`, and
fspecii/ace-step-ui's REST client (its `server/src/services/acestep.ts` before the Gradio rewrite, 193cf70), whose
JSON bodies carry every field its panel has. Bodies are shaped as those clients send them."""

import uuid

import numpy as np
import pytest

from mlx_acestep.pipeline import ACEStep, ModelFolders
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
