"""Upstream's OpenAI-style chat endpoint and model list over HTTP with the fixture model, against upstream's shapes
(`acestep/openrouter_models.py`, `openrouter_adapter.py`, typed here as the expectation) and a direct pipeline call;
opt-in CORS (issue 29)."""

import base64
import glob
import io
import json
import tempfile

import numpy as np
import pytest
import soundfile as sf

from mlx_acestep.pipeline import ACEStep, ModelFolders
from mlx_acestep.pipeline.request import GenerationRequest
from mlx_acestep.planner import tasks

# upstream's ModelInfo (openrouter_models.py:205-230) and its answer's keys (openrouter_adapter.py:448-468)
MODEL_KEYS = {"id", "name", "created", "input_modalities", "output_modalities", "context_length", "max_output_length"}
MODEL_KEYS |= {"pricing", "description", "architecture"}
ANSWER_KEYS = {"id", "object", "created", "model", "choices", "usage"}
ORIGIN = "http://studio.example:5173"


@pytest.fixture(scope="module")
def pipe(converted):
    c = converted
    return ACEStep(
        ModelFolders(c / "Qwen3-Embedding-0.6B", c / "acestep-v15-turbo", c / "vae", c / "acestep-5Hz-lm-0.6B")
    )


@pytest.fixture(scope="module")
def server(pipe, serve, tmp_path_factory):
    from mlx_acestep.server import make_app

    return serve(make_app(pipe, tmp_path_factory.mktemp("served") / "out", cors_origins=[ORIGIN]))


def chat(server, body):
    return server.json("POST", "/v1/chat/completions", body)


def decoded(url: str, media: str):
    head, data = url.split(",", 1)
    assert head == f"data:{media};base64"
    return sf.read(io.BytesIO(base64.b64decode(data)), dtype="float32")


def test_the_model_list_is_upstreams_at_both_paths(server):
    for path in ("/v1/models", "/api/v1/models"):
        status, body = server.json("GET", path)
        assert status == 200 and body["object"] == "list", body
        model = body["data"][0]
        assert set(model) == MODEL_KEYS and model["id"] == "acestep/acestep-v15-turbo"
        assert model["output_modalities"] == ["audio", "text"] and model["pricing"]["request"] == "0"


def test_a_tagged_message_is_the_song_a_direct_call_makes(server, pipe):
    content = "<prompt>gentle piano</prompt>\n<lyrics>[Verse]\nla la la</lyrics>"
    body = {"model": "acestep/acestep-v15-turbo", "messages": [{"role": "user", "content": content}], "seed": 7}
    status, answer = chat(server, body | {"audio_config": {"duration": 10, "format": "wav"}})
    assert status == 200, answer
    assert set(answer) == ANSWER_KEYS and answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("## Metadata\n**Caption:** gentle piano")
    assert "## Lyrics\n[Verse]\nla la la" in choice["message"]["content"]
    wave, rate = decoded(choice["message"]["audio"][0]["audio_url"]["url"], "audio/wav")
    song = dict(caption="gentle piano", lyrics="[Verse]\nla la la", duration=10, seed=7, steps=8, language="en")
    direct = pipe.generate(GenerationRequest(**song, thinking=False))
    assert rate == 48000 and wave.shape == direct.audio[0].shape
    np.testing.assert_allclose(wave, direct.audio[0], atol=2e-4)  # 16-bit WAV


@pytest.mark.parametrize(
    "content, caption, lyrics",
    [  # upstream's input modes (docs/en/Openrouter_API_DOC.md "Input Modes")
        ("<prompt>Epic orchestral</prompt>", "Epic orchestral", ""),
        ("<lyrics>[Verse]\nhi</lyrics> warm synths", "warm synths", "[Verse]\nhi"),
        ("[Chorus]\nDance with me tonight", "", "[Chorus]\nDance with me tonight"),
        ("one\ntwo\nthree\nfour", "", "one\ntwo\nthree\nfour"),
        ("A cheerful guitar piece", "A cheerful guitar piece", ""),
    ],
)
def test_the_message_modes_as_upstream_reads_them(content, caption, lyrics):
    from mlx_acestep.server.chat import task_body

    task, audio = task_body({"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": content}]})
    assert (task["prompt"], task["lyrics"], audio) == (caption, lyrics, [])


def test_the_chat_defaults_are_upstreams_not_the_rest_ones():
    """openrouter_adapter.py:341-411: one song, CFG 7, random seed without one, English, MP3, [inst] if instrumental."""
    from mlx_acestep.server.chat import task_body

    messages = [{"role": "user", "content": "<prompt>drums</prompt>"}]
    task, _ = task_body({"messages": messages, "audio_config": {"instrumental": True}})
    assert task["batch_size"] == 1 and task["guidance_scale"] == 7.0 and task["use_random_seed"] is True
    assert task["vocal_language"] == "en" and task["audio_format"] == "mp3" and task["lyrics"] == "[inst]"
    assert task["thinking"] is False and task["lm_temperature"] == 0.85 and task["lm_top_p"] == 0.9
    task, _ = task_body({"messages": messages, "sample_mode": True, "seed": 3})
    assert task["sample_query"] == "drums" and task["prompt"] == "" and task["use_random_seed"] is False


def test_streaming_sends_upstreams_chunks_in_order(server, monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TOKENS", 120)  # the tiny LM rambles to upstream's 3500 tokens otherwise
    body = {"messages": [{"role": "user", "content": "a cheerful guitar piece"}], "stream": True, "sample_mode": True}
    status, raw, headers = server.call("POST", "/v1/chat/completions", body | {"audio_config": {"duration": 10}})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert deltas[-3]["content"].startswith("\n\n## Metadata") and set(deltas[-2]) == {"audio"}
    assert all(d == {"content": "."} for d in deltas[1:-3])  # heartbeats only in between
    wave, rate = decoded(deltas[-2]["audio"][0]["audio_url"]["url"], "audio/mpeg")
    assert rate == 48000 and len(wave) >= 10 * rate  # the planner chose the length (sample mode writes it)


def test_sent_audio_is_used_and_its_file_removed(server, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a folder of its own: other workers upload too
    before = set(glob.glob(f"{tempfile.gettempdir()}/mlx-acestep-upload-*"))
    buf = io.BytesIO()
    sf.write(buf, np.zeros((48000 * 2, 2), np.float32), 48000, format="WAV")  # short: the cover encodes it
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(buf.getvalue()).decode(), "format": "wav"}}
    content = [{"type": "text", "text": "<prompt>rock</prompt>"}, part]
    body = {"messages": [{"role": "user", "content": content}], "task_type": "cover", "seed": 1}
    status, answer = chat(server, body | {"audio_config": {"format": "flac"}})
    assert status == 200, answer
    wave, _ = decoded(answer["choices"][0]["message"]["audio"][0]["audio_url"]["url"], "audio/flac")
    assert wave.shape == (48000 * 2, 2)  # a cover is as long as its source
    assert set(glob.glob(f"{tempfile.gettempdir()}/mlx-acestep-upload-*")) <= before


def test_thinking_with_a_source_task_is_left_out_as_upstream_skips_its_lm(tmp_path):
    """The skill and the DAW send their thinking default with cover and repaint; upstream runs them without its LM
    (inference.py:612-640), so the task runs and its log says so."""
    from mlx_acestep.server.protocol import request_fields

    notes = []
    body = {"task_type": "repaint", "thinking": True, "repainting_start": 1, "repainting_end": 2}
    fields, _ = request_fields(body, "turbo", {"src_audio": tmp_path / "a.wav"}, notes)
    assert fields["thinking"] is False and notes == ["thinking was not used: the repaint task follows its source audio"]


@pytest.mark.parametrize(
    "body, detail",
    [
        ({"messages": []}, "No valid prompt, lyrics, sample query, or input audio found in request"),
        ({"messages": [{"role": "user", "content": ""}]}, "No valid prompt, lyrics, sample query"),
        ({"messages": "hi"}, "messages must be a list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role must be one of"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature must be at least 0"),
        ({"messages": [{"role": "user", "content": "x"}], "audio_config": {"duration": 0.05}}, "audio_config.duration"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "maybe"}, "stream must be true or false"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "@@"}}]}]},
            "messages[0].content[0].input_audio.data is not base64 audio",
        ),
    ],
)
def test_a_bad_chat_request_is_a_400_naming_the_field(server, body, detail):
    status, answer = chat(server, body)
    assert status == 400 and answer["detail"].startswith(detail), answer


def test_cors_is_for_the_origins_given_only(server, pipe, serve, tmp_path):
    from mlx_acestep.errors import AceStepError
    from mlx_acestep.server import make_app

    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,authorization"}
    r = server.client.options("/v1/chat/completions", headers={"Origin": ORIGIN} | ask)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = server.client.get("/health", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    r = server.client.get("/health", headers={"Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in r.headers
    plain = serve(make_app(pipe, tmp_path / "out"))
    assert "access-control-allow-origin" not in plain.client.get("/health", headers={"Origin": ORIGIN}).headers
    with pytest.raises(AceStepError, match="--cors-origin studio.example: not an origin"):
        make_app(pipe, tmp_path / "out", cors_origins=["studio.example"])
