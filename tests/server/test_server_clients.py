"""What upstream's clients send, over HTTP with the fixture model: the DAW's multipart text2music with its silence
placeholder and its lego clips (`track_name`, `instruction`), the VST3 plugin's empty caption, upstream's `detail`
on every error, the audio formats it names, and a wrong value refused naming its field (issue 29)."""

import glob
import io
import tempfile
import uuid

import numpy as np
import pytest
import soundfile as sf

from mlx_acestep.pipeline import ACEStep, ModelFolders

# upstream's instruction templates (acestep/constants.py:129-138), typed here as the expectation
TEXT2MUSIC = "Fill the audio semantic mask based on the given conditions:"
LEGO_VOCALS = "Generate the VOCALS track based on the audio context:"
DAW_SEGMENT = "Generate a segment of the BACKING VOCALS track based on the audio context:"


def _folders(c, dit):
    return ModelFolders(c / "Qwen3-Embedding-0.6B", c / dit, c / "vae")


@pytest.fixture(scope="module")
def server(converted, serve, tmp_path_factory):
    from mlx_acestep.server import make_app

    root = tmp_path_factory.mktemp("served")
    (root / "inputs").mkdir()
    client = serve(
        make_app(ACEStep(_folders(converted, "acestep-v15-turbo")), root / "out", input_dirs=[root / "inputs"])
    )
    client.root = root
    return client


def multipart(fields: dict, files: dict | None = None) -> tuple[bytes, str]:
    """A form as the DAW's `FormData` sends it: every value a string, files with a name."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for name, data in (files or {}).items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.wav"\r\n'
        parts.append(f"{head}Content-Type: audio/wav\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wav_bytes(seconds: float, rate: int = 48000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * rate), 2), np.float32), rate, format="WAV")
    return buf.getvalue()


def test_every_error_carries_upstreams_detail_beside_the_envelope(server):
    for method, path, body, status in (
        ("GET", "/no-such-route", None, 404),
        ("GET", "/release_task", None, 405),
        ("GET", "/v1/audio", None, 422),  # no path
        ("GET", "/v1/audio?path=%2Ftmp%2Fa%00b.wav", None, 400),  # a NUL byte was a 500
        ("POST", "/release_task", {"prompt": "x", "audio_duration": "abc"}, 400),
    ):
        got, env = server.json(method, path, body)
        assert got == status and env["code"] == status and env["data"] is None, (path, env)
        assert env["detail"] and env["error"], (path, env)
    got, env = server.json("POST", "/release_task", {"prompt": "x", "audio_duration": "abc"})
    assert env["detail"] == env["error"] == "audio_duration must be a number of seconds, got 'abc'"


def test_the_daws_text2music_form_with_its_placeholder_upload(server):
    """The DAW posts every field as a string and a 0.1 s silence as src_audio with text2music: accepted, as
    upstream (which drops it: inference.py:839-846), and the job says it was not used."""
    before = set(glob.glob(f"{tempfile.gettempdir()}/mlx-acestep-upload-*"))
    fields = {"task_type": "text2music", "prompt": "lofi", "lyrics": "", "audio_duration": "10", "batch_size": "1"}
    fields |= {"thinking": "false", "use_random_seed": "false", "seed": "7", "audio_format": "wav", "bpm": "90"}
    raw, kind = multipart(fields, {"src_audio": wav_bytes(0.1)})
    status, env = server.json("POST", "/release_task", raw=raw, content_type=kind)
    assert status == 200, env
    state, items = server.wait(env["data"]["task_id"])
    assert state == 1 and len(items) == 1 and items[0]["seed_value"] == "7", items
    assert "source audio sent with this text2music task was not used" in items[0]["generation_info"]
    assert set(glob.glob(f"{tempfile.gettempdir()}/mlx-acestep-upload-*")) <= before  # the upload is removed


def test_an_empty_caption_is_a_task_as_upstream(server):
    """`{}` is a valid request upstream, and the plugin's custom mode sends `prompt: ""`: the DiT reads an empty
    caption (the codes that mode sends: test_server_custom.py)."""
    status, env = server.json("POST", "/release_task", {"audio_duration": 10, "batch_size": 1, "audio_format": "wav"})
    assert status == 200, env
    state, items = server.wait(env["data"]["task_id"])
    assert state == 1 and items[0]["prompt"] == "", items


def _mp3_bitrate(data: bytes) -> int:
    """The first MPEG-1 Layer III frame's bitrate in kbit/s, from its header (after any ID3v2 tag)."""
    start = 0
    if data[:3] == b"ID3":
        size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
        start = 10 + size
    while not (data[start] == 0xFF and data[start + 1] & 0xE0 == 0xE0):
        start += 1
    index = data[start + 2] >> 4
    return (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[index]


@pytest.mark.parametrize(
    "fmt, media, container, subtype",
    [
        (None, "audio/mpeg", "MP3", "MPEG_LAYER_III"),  # upstream's default
        ("mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III"),
        ("opus", "audio/ogg", "OGG", "OPUS"),
        ("wav32", "audio/wav", "WAV", "FLOAT"),
        ("flac", "audio/flac", "FLAC", "PCM_24"),
    ],
)
def test_the_audio_formats_upstream_names(server, fmt, media, container, subtype):
    body = {"prompt": "bells", "audio_duration": 10, "batch_size": 1} | ({"audio_format": fmt} if fmt else {})
    status, env = server.json("POST", "/release_task", body)
    assert status == 200, env
    state, items = server.wait(env["data"]["task_id"])
    assert state == 1, items
    status, data, headers = server.call("GET", items[0]["file"])
    assert status == 200 and headers["content-type"] == media
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (container, subtype, 48000, 2)
    assert abs(info.frames - 480000) <= 48000 * 0.1  # 10 s (lossy codecs pad a little)
    if container == "MP3":
        assert _mp3_bitrate(data) == 128  # upstream's 128 kbit/s constant (audio_utils.py:117)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"audio_format": "aac"}, "audio_format 'aac'"),
        ({"audio_format": "ogg"}, "audio_format 'ogg': unknown"),
        ({"batch_size": 0}, "batch_size must be between 1 and 8"),
        ({"batch_size": "1.5"}, "batch_size must be a whole number"),
        ({"audio_duration": -5}, "audio_duration must be between 0.1 and 600"),
        ({"thinking": "maybe"}, "thinking must be true or false, got 'maybe'"),
        ({"use_random_seed": "perhaps"}, "use_random_seed must be true or false"),
        ({"seed": "abc", "use_random_seed": False}, "seed must be a whole number"),
        ({"prompt": {"genre": "jazz"}}, "prompt must be text, got dict"),
        ({"lyrics": ["la", "la"]}, "lyrics must be text, got list"),
        ({"task_type": "lego", "track_name": "kazoo"}, "track_name: unknown track 'kazoo'"),
        ({"timesteps": "0.9,abc"}, "timesteps must be comma-separated numbers"),
        ({"extract_codes_only": True}, "extract_codes_only needs the source audio"),
        ({"lm_top_k": 4.5}, "lm_top_k must be a whole number"),
    ],
)
def test_a_wrong_value_is_a_400_naming_its_field(server, body, needle):
    """Upstream falls back to the default without a word (batch 0 made 2 songs, "abc" seconds made 30)."""
    status, env = server.json("POST", "/release_task", {"prompt": "x"} | body)
    assert status == 400 and needle in env["detail"] and env["code"] == 400, env


def test_a_bad_value_in_a_form_is_named_too(server):
    raw, kind = multipart({"prompt": "x", "batch_size": "two", "audio_duration": "10"})
    status, env = server.json("POST", "/release_task", raw=raw, content_type=kind)
    assert status == 400 and "batch_size must be a whole number, got 'two'" in env["detail"]


def test_the_daws_lego_clip_gets_its_tracks_instruction(converted, serve, tmp_path, monkeypatch):
    """The DAW's lego clip names its track in `track_name` and sends its own `instruction`: the DiT reads that
    line as upstream (job_generation_setup.py:24-65); with `track_name` alone, upstream's template for the track."""
    from mlx_acestep.pipeline import prepare
    from mlx_acestep.server import make_app

    seen = []

    def record(tokenizer, items, *args):  # what the DiT would read; the rest of the run is the pipeline's tests'
        seen.append(items[0].instruction)
        raise RuntimeError("stopped once the prompt was written")

    monkeypatch.setattr(prepare, "tokenize_items", record)
    client = serve(make_app(ACEStep(_folders(converted, "acestep-v15-base")), tmp_path / "out"))
    lego = {"task_type": "lego", "prompt": "soft", "global_caption": "a ballad", "batch_size": "1"}
    lego |= {"repainting_start": "0.5", "repainting_end": "1.5", "inference_steps": "2", "audio_format": "wav"}
    for extra, expected in (
        ({"track_name": "backing_vocals", "instruction": DAW_SEGMENT}, DAW_SEGMENT),
        ({"track_name": "vocals"}, LEGO_VOCALS),
        ({"track_name": "vocals", "instruction": TEXT2MUSIC}, LEGO_VOCALS),  # upstream's default: the template
    ):
        seen.clear()
        raw, kind = multipart(lego | extra, {"src_audio": wav_bytes(1.6)})  # short: each run encodes it
        status, env = client.json("POST", "/release_task", raw=raw, content_type=kind)
        assert status == 200, env
        state, items = client.wait(env["data"]["task_id"])
        assert state == 2 and "stopped once the prompt was written" in items[0]["error"], items
        assert seen == [expected], (extra, seen)


def test_bad_adapter_input_is_a_400_not_a_500(server):
    import json
    import struct

    header = json.dumps({"__metadata__": ["not", "an", "object"]}).encode()
    bad = server.root / "inputs" / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(header)) + header)
    for body, needle in (
        ({"path": str(bad)}, "__metadata__ is not an object"),
        ({"path": str(bad), "adapter_name": {"a": 1}}, "adapter_name must be a string"),
        ({"path": str(bad), "name": ["x"]}, "adapter_name must be a string"),
    ):
        status, env = server.json("POST", "/v1/lora/load", body)
        assert status == 400 and needle in env["detail"], env
    status, env = server.json("POST", "/release_task", {"prompt": "x", "loras": [{"name": {"a": 1}}]})
    assert status == 400 and "no adapter named" in env["detail"], env


def _noise_wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(4)
    sf.write(buf, 0.1 * rng.standard_normal((int(seconds * 48000), 2)).astype(np.float32), 48000, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize(
    "task, files",
    [
        ({"task_type": "text2music"}, {"src_audio": wav_bytes(0.1)}),  # the DAW's placeholder beside text2music
        ({"task_type": "repaint", "repainting_start": "1", "repainting_end": "3"}, {"src_audio": _noise_wav(4.0)}),
        ({"task_type": "cover", "audio_cover_strength": "0.5"}, {"src_audio": _noise_wav(4.0)}),
    ],
)
def test_the_daws_4s_clip_comes_back_4s_long(server, task, files):
    """The DAW sends a clip's own length as `audio_duration` (aceStepApi.ts / generationPipeline.ts): a 4 s clip
    was refused under the old 10 s floor. Upstream renders it (at least 128 latent frames); the file is the clip's
    4 s, every value sent as a string in a multipart form."""
    fields = {"prompt": "lofi keys", "lyrics": "", "audio_duration": "4", "batch_size": "1", "thinking": "false"}
    fields |= {"use_random_seed": "false", "seed": "11", "audio_format": "wav", "inference_steps": "8"} | task
    raw, kind = multipart(fields, files)
    status, env = server.json("POST", "/release_task", raw=raw, content_type=kind)
    assert status == 200, env
    state, items = server.wait(env["data"]["task_id"])
    assert state == 1 and len(items) == 1, items
    status, data, _ = server.call("GET", items[0]["file"])
    assert status == 200
    info = sf.info(io.BytesIO(data))
    assert (info.frames, info.samplerate) == (4 * 48000, 48000)
