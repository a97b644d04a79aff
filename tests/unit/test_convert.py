"""The converter: VAE remap on hand-made tensors, atomic output, strict loading, bad files."""

import json
import shutil

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from helpers import copy_vae_root
from mlx.utils import tree_flatten
from safetensors.numpy import save_file

from mlx_acestep.convert import ConvertOptions, convert_checkpoints
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component
from mlx_acestep.models.vae.oobleck import fuse_weight_norm
from mlx_acestep.models.vae.oobleck import sanitize as sanitize_vae
from mlx_acestep.quantization import apply_recorded_quantization, quantize_model
from mlx_acestep.safetensors_io import read_safetensors

rng = np.random.default_rng(0)


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# --- remap ---------------------------------------------------------------------


def test_weight_norm_fusion_matches_its_definition():
    g, v = rand(4, 1, 1), rand(4, 3, 5)
    w = np.array(fuse_weight_norm(mx.array(g), mx.array(v)))
    for o in range(4):  # the definition, in float64
        want = g[o, 0, 0].astype(np.float64) * v[o] / np.linalg.norm(v[o].astype(np.float64))
        np.testing.assert_allclose(w[o], want, rtol=1e-6)


def test_vae_remap_layouts():
    state = {
        "decoder.conv1.weight_g": rand(6, 1, 1),
        "decoder.conv1.weight_v": rand(6, 4, 7),  # Conv1d [out, in, k]
        "decoder.conv1.bias": rand(6),
        "decoder.block.0.conv_t1.weight_g": rand(6, 1, 1),  # per *input* channel
        "decoder.block.0.conv_t1.weight_v": rand(6, 3, 4),  # ConvTranspose1d [in, out, k]
        "decoder.block.0.snake1.alpha": rand(1, 6, 1),
    }
    out = {k: np.array(v) for k, v in sanitize_vae({k: mx.array(v) for k, v in state.items()}, "x.safetensors").items()}
    assert set(out) == {
        "decoder.conv1.weight",
        "decoder.conv1.bias",
        "decoder.block.0.conv_t1.weight",
        "decoder.block.0.snake1.alpha",
    }

    def fused(prefix):  # the definition: g * v / ||v||, the norm over all axes but the first
        g, v = state[f"{prefix}.weight_g"].astype(np.float64), state[f"{prefix}.weight_v"].astype(np.float64)
        return g * v / np.sqrt((v * v).sum(axis=(1, 2), keepdims=True))

    np.testing.assert_allclose(
        out["decoder.conv1.weight"], fused("decoder.conv1").transpose(0, 2, 1), rtol=1e-6
    )  # [out, k, in]
    np.testing.assert_allclose(
        out["decoder.block.0.conv_t1.weight"], fused("decoder.block.0.conv_t1").transpose(1, 2, 0), rtol=1e-6
    )  # ConvTranspose1d [in, out, k] -> [out, k, in]
    assert out["decoder.block.0.snake1.alpha"].shape == (6,)


def test_parametrizations_naming_is_the_same_tensor():
    g, v = rand(5, 1, 1), rand(5, 2, 7)
    g, v = mx.array(g), mx.array(v)
    legacy = sanitize_vae({"encoder.conv1.weight_g": g, "encoder.conv1.weight_v": v}, "a")
    modern = sanitize_vae(
        {"encoder.conv1.parametrizations.weight.original0": g, "encoder.conv1.parametrizations.weight.original1": v},
        "b",
    )
    np.testing.assert_array_equal(np.array(legacy["encoder.conv1.weight"]), np.array(modern["encoder.conv1.weight"]))


@pytest.mark.parametrize(
    "state,match",
    [
        ({"encoder.conv1.weight_v": rand(5, 2, 7)}, r"missing key 'encoder\.conv1\.weight_g'"),
        ({"encoder.conv1.weight": rand(5, 2, 7)}, r"unexpected key 'encoder\.conv1\.weight'"),
        ({"encoder.snake1.alpha": rand(5)}, r"'encoder\.snake1\.alpha' has shape"),
    ],
)
def test_remap_errors_name_the_key(state, match):
    with pytest.raises(AceStepError, match=match):
        sanitize_vae({k: mx.array(v) for k, v in state.items()}, "f.safetensors")


# --- the converter on checkpoint folders --------------------------------------


@pytest.fixture()
def vae_root(fixtures, tmp_path):
    return copy_vae_root(fixtures, tmp_path / "src")


def test_refuses_existing_dst_and_replaces_with_force(vae_root, tmp_path):
    dst = tmp_path / "out"
    report = convert_checkpoints(vae_root, dst)
    assert report.converted[0][0] == "vae" and not report.skipped
    cfg = json.loads((dst / "vae" / "config.json").read_text())
    assert cfg["layout_version"] == 2 and cfg["component"] == "vae" and cfg["quantization"] is None
    manifest = json.loads((dst / "vae" / "manifest.json").read_text())
    assert set(manifest["sources"]) == {"vae/config.json", "vae/diffusion_pytorch_model.safetensors"}
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"].values())
    (dst / "marker").write_text("old")
    with pytest.raises(AceStepError, match="already exists"):
        convert_checkpoints(vae_root, dst)
    assert (dst / "marker").exists()
    convert_checkpoints(vae_root, dst, ConvertOptions(force=True))
    assert not (dst / "marker").exists() and (dst / "vae" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp folders left


def test_reports_converted_and_skipped_components(fixtures, tmp_path, monkeypatch):
    from mlx_acestep.convert import converter

    report = convert_checkpoints(fixtures / "checkpoints", tmp_path / "out")
    converted = dict(report.converted)
    assert sorted(converted) == [
        "Qwen3-Embedding-0.6B",
        "acestep-5Hz-lm-0.6B",
        "acestep-v15-base",
        "acestep-v15-turbo",
        "vae",
    ]
    assert "2B DiT, condition encoder, FSQ tokenizer/detokenizer" in converted["acestep-v15-turbo"]
    assert not report.skipped
    # a kind without a converter is listed as skipped, with the reason
    monkeypatch.delitem(converter.CONVERTERS, "lm")
    report = convert_checkpoints(fixtures / "checkpoints", tmp_path / "out2")
    assert "unsupported component" in dict(report.skipped)["acestep-5Hz-lm-0.6B"]
    text = tmp_path / "out" / "Qwen3-Embedding-0.6B"
    assert (text / "tokenizer.json").is_file() and (text / "tokenizer_config.json").is_file()


def test_single_component_folder_as_src(vae_root, tmp_path):
    convert_checkpoints(vae_root / "vae", tmp_path / "out")
    assert (tmp_path / "out" / "vae" / "config.json").is_file()


def corrupt_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_header(path):
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json at!"
    path.write_bytes(bytes(data))


def drop_key(path):
    state = {k: np.array(v) for k, v in read_safetensors(path).items() if k != "decoder.conv2.weight_g"}
    save_file(state, str(path))


def wrong_shape(path):
    state = {k: np.array(v) for k, v in read_safetensors(path).items()}
    state["decoder.conv1.bias"] = state["decoder.conv1.bias"][:-1]
    save_file(state, str(path))


@pytest.mark.parametrize(
    "damage,match",
    [
        (corrupt_truncate, "truncated"),
        (corrupt_header, "corrupt safetensors header"),
        (drop_key, r"missing key 'decoder\.conv2\.weight_g'"),
        (wrong_shape, r"'decoder\.conv1\.bias' has shape \(31,\), expected \(32,\)"),
    ],
)
def test_bad_checkpoint_leaves_nothing_behind(vae_root, tmp_path, damage, match):
    damage(vae_root / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(AceStepError, match=match) as e:
        convert_checkpoints(vae_root, tmp_path / "out")
    assert "diffusion_pytorch_model.safetensors" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_missing_inputs_are_clear(tmp_path):
    with pytest.raises(AceStepError, match="checkpoint folder not found"):
        convert_checkpoints(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AceStepError, match="no ACE-Step 1.5 checkpoint folders"):
        convert_checkpoints(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "root" / "vae").mkdir(parents=True)
    with pytest.raises(AceStepError, match=r"vae/config\.json: file not found"):
        convert_checkpoints(tmp_path / "root", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bfloat16_source_is_read(vae_root, tmp_path):
    """Real DiT checkpoints are bf16; the numpy reader widens them exactly."""
    path = vae_root / "vae" / "diffusion_pytorch_model.safetensors"
    state = {k: np.array(v) for k, v in read_safetensors(path).items()}  # copy out of the memory map
    mx.save_safetensors(str(path), {k: mx.array(v).astype(mx.bfloat16) for k, v in state.items()})
    back = read_safetensors(path)
    key = "decoder.conv1.bias"
    expected = np.array(mx.array(state[key]).astype(mx.bfloat16).astype(mx.float32))
    np.testing.assert_array_equal(back[key], expected)
    convert_checkpoints(vae_root, tmp_path / "out")


# --- strict loading --------------------------------------------------------------


@pytest.fixture()
def converted_vae(vae_root, tmp_path):
    convert_checkpoints(vae_root, tmp_path / "out")
    return tmp_path / "out" / "vae"


def edit_weights(folder, fn):
    weights = dict(mx.load(str(folder / "model.safetensors")))
    fn(weights)
    mx.save_safetensors(str(folder / "model.safetensors"), weights)


def test_loader_names_missing_and_unexpected_keys(converted_vae):
    edit_weights(converted_vae, lambda w: w.pop("decoder.conv1.bias"))
    with pytest.raises(AceStepError, match=r"model\.safetensors: missing key 'decoder\.conv1\.bias'"):
        load_component(converted_vae)
    edit_weights(
        converted_vae, lambda w: w.update({"decoder.conv1.bias": mx.zeros((32,)), "extra.weight": mx.zeros((2,))})
    )
    with pytest.raises(AceStepError, match=r"unexpected key 'extra\.weight'"):
        load_component(converted_vae)


def test_loader_checks_config(converted_vae):
    with pytest.raises(AceStepError, match="holds component 'vae', expected 'dit'"):
        load_component(converted_vae, "dit")
    cfg = json.loads((converted_vae / "config.json").read_text())
    (converted_vae / "config.json").write_text(json.dumps(cfg | {"layout_version": 0}))
    with pytest.raises(AceStepError, match="layout_version"):
        load_component(converted_vae)
    shutil.rmtree(converted_vae)
    with pytest.raises(AceStepError, match="model folder not found"):
        load_component(converted_vae)


# --- quantization --------------------------------------------------------------------


def test_vae_quantization_records_no_layers(vae_root, tmp_path):
    report = convert_checkpoints(vae_root, tmp_path / "out", ConvertOptions(quantize="q8"))
    assert "no quantizable layers" in report.converted[0][1]
    cfg = json.loads((tmp_path / "out" / "vae" / "config.json").read_text())
    assert cfg["quantization"] == {"bits": 8, "group_size": 64, "mode": "affine"}
    load_component(tmp_path / "out" / "vae")


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.b = nn.Linear(48, 16)  # 48 does not divide by 64: stays float
        self.keep = nn.Linear(64, 8)


@pytest.mark.parametrize("bits", [8, 4])
def test_recorded_quantization_rebuilds_the_same_structure(bits, tmp_path):
    """What the converter records is what the loader replays, and the result stays close."""
    model = Toy()
    x = mx.random.normal((3, 64), key=mx.random.key(0))
    ref = model.a(x)
    block = quantize_model(model, bits, 64, keep=("keep",))
    assert block == {"group_size": 64, "bits": bits, "mode": "affine"}  # mlx-lm's format: nothing differs per layer
    weights = dict(tree_flatten(model.parameters()))
    assert "a.scales" in weights and "b.scales" not in weights and "keep.scales" not in weights
    mx.save_safetensors(str(tmp_path / "w.safetensors"), weights)
    rebuilt = Toy()
    apply_recorded_quantization(rebuilt, json.loads(json.dumps(block)), weights, "config.json")
    assert isinstance(rebuilt.a, nn.QuantizedLinear) and isinstance(rebuilt.b, nn.Linear)
    rebuilt.load_weights(str(tmp_path / "w.safetensors"), strict=True)
    err = float(mx.abs(rebuilt.a(x) - ref).max() / mx.abs(ref).max())
    assert err < (0.02 if bits == 8 else 0.2)


# --- streaming: memory is a shard, not the checkpoint ---------------------------------------------


@pytest.mark.parametrize("kind", ["text_encoder", "lm", "vae"])
def test_conversion_holds_a_shard_not_the_checkpoint(kind, fixtures, tmp_path, monkeypatch):
    """A bf16 checkpoint of ~95 MB converted to float32 (~190 MB) with 4 MB shards: MLX's peak stays a few shards."""
    from mlx_acestep.convert import component

    if kind == "vae":
        src = copy_vae_root(fixtures, tmp_path / "src")
        folder, name = src / "vae", "diffusion_pytorch_model.safetensors"
    else:
        src = tmp_path / "src"
        folder = src / ("Qwen3-Embedding-0.6B" if kind == "text_encoder" else "acestep-5Hz-lm-0.6B")
        shutil.copytree(fixtures / "checkpoints" / folder.name, folder)
        config = json.loads((folder / "config.json").read_text())
        # many small tensors (the largest 4 MB in float32): the bound is the shards, not one big tensor
        config.update(
            vocab_size=4000,
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            head_dim=64,
            num_attention_heads=8,
            num_key_value_heads=4,
        )
        (folder / "config.json").write_text(json.dumps(config))
        from mlx_acestep.loading import BUILDERS

        model = BUILDERS[kind](config, None, "config.json")
        prefix = "model." if kind == "lm" else ""
        weights = {
            prefix + k if not k.startswith("model.") else k: v.astype(mx.bfloat16)
            for k, v in tree_flatten(model.parameters())
        }
        mx.save_safetensors(str(folder / "model.safetensors"), weights)
        del model, weights
        name = "model.safetensors"
    size = (folder / name).stat().st_size
    monkeypatch.setattr(component, "SHARD_BYTES", 4 * 2**20)
    mx.clear_cache()
    mx.reset_peak_memory()
    before = mx.get_active_memory()  # what the process holds already (other tests' arrays)
    convert_checkpoints(src, tmp_path / "out", ConvertOptions(dtype="float32"))
    peak = mx.get_peak_memory() - before
    out = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert (out / "model.safetensors.index.json").is_file() or size < 4 * 2**20
    load_component(out)
    print(f"{kind}: source {size / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB")
    if size > 16 * 2**20:  # the float32 output is twice the bf16 source: a whole-file conversion holds 3x `size`
        assert peak < 0.25 * size, (peak, size)
