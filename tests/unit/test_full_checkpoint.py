"""The full-size random checkpoint generator (`benchmarks/full_checkpoint.py`), exercised on TINY configs only.

Its streaming writer must produce what `mlx_acestep/tiny.py` writes (same files, key
names, shapes and configs), as bfloat16 files that parse with `read_header` and
load with `mx.load`. The real sizes are checked on the recorded layout alone
(no data is drawn).
"""

import json
import math
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from helpers import require

sys.path.insert(0, str(Path(__file__).parents[2]))

from benchmarks import full_checkpoint as fc  # noqa: E402
from mlx_acestep import tiny, tiny_weights  # noqa: E402
from mlx_acestep.convert.torch_pickle import read_torch_tensors  # noqa: E402
from mlx_acestep.errors import AceStepError  # noqa: E402
from mlx_acestep.safetensors_io import read_header, read_safetensors  # noqa: E402

TINY = fc.tiny_components()


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    require("torch")  # silence_latent.pt is torch.save'd
    return fc.build_checkpoint(tmp_path_factory.mktemp("full") / "ckpt", TINY, seed=0, log=lambda m: None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return tiny.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


def shapes(path: Path) -> dict[str, tuple[int, ...]]:
    header, _, _ = read_header(path)
    return {k: tuple(v["shape"]) for k, v in header.items()}


@pytest.mark.parametrize("name", fc.COMPONENTS)
def test_recorded_layout_is_tiny_py_draw_order(name):
    c = TINY[name]
    drawn = tiny._drawn(0, c.folder, *c.layout)
    assert [(s.name, s.shape) for s in fc.layout(c)] == [(k, v.shape) for k, v in drawn.items()]


@pytest.mark.live
@pytest.mark.parametrize("name", fc.COMPONENTS)
def test_streamed_files_match_tiny_checkpoint(streamed, reference, name):
    c = TINY[name]
    ours, ref = streamed / c.folder, reference / c.folder
    expected = {p.name for p in ref.iterdir()} - {"silence_latent.safetensors"}
    if c.silence_channels is not None:
        expected.add("silence_latent.pt")  # the official file; tiny.py writes a safetensors one
    assert {p.name for p in ours.iterdir()} == expected
    assert shapes(ours / c.weights) == shapes(ref / c.weights)
    for config in c.configs:
        assert json.loads((ours / config).read_text()) == json.loads((ref / config).read_text())
    for f in expected - {c.weights, *c.configs, "silence_latent.pt"}:  # tokenizer files
        assert (ours / f).read_bytes() == (ref / f).read_bytes(), f


@pytest.mark.live
@pytest.mark.parametrize("name", fc.COMPONENTS)
def test_streamed_files_parse_and_load_as_bf16(streamed, name):
    c = TINY[name]
    path = streamed / c.folder / c.weights
    header, metadata, offset = read_header(path)
    assert metadata == {"format": "pt"} and offset % 8 == 0
    assert {v["dtype"] for v in header.values()} == {"BF16"}
    assert path.stat().st_size == offset + sum(2 * math.prod(v["shape"]) for v in header.values())
    weights = mx.load(str(path))
    assert set(weights) == set(header)
    for k, w in weights.items():
        assert w.dtype == mx.bfloat16 and tuple(w.shape) == tuple(header[k]["shape"]), k
        assert bool(mx.all(mx.isfinite(w.astype(mx.float32)))), k


@pytest.mark.live
def test_draw_scales_follow_tiny_py(streamed):
    """Norms near 1, fan-in scaled linears, g = gain * ||v|| (jittered) for every weight-norm pair."""
    state = read_safetensors(streamed / tiny.VAE_DIR / TINY["vae"].weights)
    for s in fc.layout(TINY["vae"]):
        if s.kind == "weight_g":
            v = state[s.name[:-1] + "v"].astype(np.float64)
            ratio = state[s.name].ravel() / np.sqrt((v.reshape(len(v), -1) ** 2).sum(1)) / s.gain
            assert np.all(np.abs(ratio - 1) < 0.3) and abs(ratio.mean() - 1) < 0.1, s.name
    lm = read_safetensors(streamed / tiny.LM_DIR / "model.safetensors")
    assert abs(lm["model.norm.weight"].mean() - 1) < 0.1
    q = lm["model.layers.0.self_attn.q_proj.weight"]
    assert q.std() == pytest.approx(q.shape[1] ** -0.5, rel=0.2)


@pytest.mark.live
def test_silence_latent_is_tiny_py_s_channel_first_float32(streamed, reference):
    (latent,) = read_torch_tensors(streamed / tiny.TURBO_DIR / "silence_latent.pt").values()
    assert latent.dtype == np.float32 and latent.shape == (1, 64, tiny_weights.SILENCE_FRAMES)
    np.testing.assert_array_equal(
        latent, read_safetensors(reference / tiny.TURBO_DIR / "silence_latent.safetensors")["silence_latent"]
    )


@pytest.mark.live
def test_streamed_root_converts(streamed, tmp_path):
    from mlx_acestep.convert import ConvertOptions, convert_checkpoints

    report = convert_checkpoints(streamed, tmp_path / "mlx", ConvertOptions(dtype="bfloat16"))
    assert sorted(name for name, _ in report.converted) == sorted(c.folder for c in TINY.values())


def test_pieces_and_threads_do_not_change_the_bytes(tmp_path, monkeypatch):
    """Tensors split into many pieces (v's row norms gathered across them) give the same file on 1 or 3 threads."""
    specs = fc.layout(TINY["vae"])
    fc.write_safetensors(tmp_path / "a.safetensors", specs, 0, "vae", workers=1)
    monkeypatch.setattr(fc, "CHUNK", 100)
    fc.write_safetensors(tmp_path / "b.safetensors", specs, 0, "vae", workers=1)
    fc.write_safetensors(tmp_path / "c.safetensors", specs, 0, "vae", workers=3)
    assert (tmp_path / "b.safetensors").read_bytes() == (tmp_path / "c.safetensors").read_bytes()
    a, b = read_safetensors(tmp_path / "a.safetensors"), read_safetensors(tmp_path / "b.safetensors")
    g = "decoder.block.0.conv_t1.weight_g"  # same statistics, other draws
    assert np.allclose(a[g].mean(), b[g].mean(), rtol=0.1)


def test_to_bf16_rounds_to_nearest_even_as_mlx():
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32)
    x[:3] = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)]  # exact ties
    want = np.array(mx.array(x).astype(mx.bfloat16).view(mx.uint16))
    np.testing.assert_array_equal(fc.to_bf16(x.copy()), want)


def test_full_size_layout_matches_the_spec():
    """Spec 2.1-2.4 tensor and parameter counts, from the recorded layout (nothing drawn)."""
    full = fc.full_components()
    counts = {n: (len(specs), sum(s.numel for s in specs)) for n, specs in ((n, fc.layout(c)) for n, c in full.items())}
    assert counts["dit"] == (677, 2_393_872_518)
    assert counts["vae"] == (365, 168_695_426)
    assert counts["text_encoder"][0] == 310 and round(counts["text_encoder"][1] / 1e6) == 596
    assert counts["lm"][0] == 310 and round(counts["lm"][1] / 1e9, 2) == 1.85
    dit = {s.name: s.shape for s in fc.layout(full["dit"])}
    assert dit["decoder.proj_in.1.weight"] == (2048, 192, 2) and dit["decoder.proj_out.1.weight"] == (2048, 64, 2)
    assert dit["tokenizer.quantizer.project_in.weight"] == (6, 2048)
    lm = {s.name: s.shape for s in fc.layout(full["lm"])}
    assert lm["model.embed_tokens.weight"] == (217204, 2048) and "lm_head.weight" not in lm
    text = {s.name: s.shape for s in fc.layout(full["text_encoder"])}
    assert text["embed_tokens.weight"] == (151669, 1024) and text["layers.27.self_attn.q_proj.weight"] == (2048, 1024)
    vae = {s.name: s.shape for s in fc.layout(full["vae"])}
    assert vae["encoder.block.4.conv1.weight_v"] == (2048, 1024, 20) and vae["decoder.conv2.weight_g"] == (2, 1, 1)
    assert "decoder.conv2.bias" not in vae and vae["encoder.snake1.alpha"] == (1, 2048, 1)


def test_full_configs_agree_with_the_pipeline_benchmark():
    from benchmarks.pipeline_runs import REAL

    for ours, real in (
        (fc.DIT_CONFIG, REAL["dit"]),
        (fc.TEXT_ENCODER_CONFIG, REAL["text_encoder"]),
        (fc.VAE_CONFIG, REAL["vae"]),
    ):
        assert {k: ours.get(k) for k in real} == real
    assert fc.DIT_CONFIG["is_turbo"] is True and fc.DIT_CONFIG["model_version"] == "turbo"
    assert fc.DIT_CONFIG["dtype"] == fc.LM_CONFIG["dtype"] == fc.TEXT_ENCODER_CONFIG["dtype"] == "bfloat16"
    assert fc.LM_CONFIG["vocab_size"] == 217204 and fc.LM_CONFIG["max_position_embeddings"] == 40960


def test_refuses_a_non_empty_root_and_unknown_components(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "x").write_text("")
    with pytest.raises(AceStepError, match="not an empty folder"):
        fc.build_checkpoint(tmp_path / "root", TINY, log=lambda m: None)
    with pytest.raises(AceStepError, match="unknown component"):
        fc.build_checkpoint(tmp_path / "new", TINY, only="vae,unet", log=lambda m: None)
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir()] == ["root"]


def test_only_writes_the_named_components(tmp_path):
    root = fc.build_checkpoint(tmp_path / "root", TINY, only="vae,text_encoder", log=lambda m: None)
    assert sorted(p.name for p in root.iterdir()) == sorted([tiny.VAE_DIR, tiny.TEXT_ENCODER_DIR])
