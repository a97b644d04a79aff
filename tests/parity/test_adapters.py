"""LoRA and LoKr adapters on the DiT decoder, against peft on diffusers' transformer (live, float32).

Adapters are written as the reference's trainer writes them (a PEFT folder whose keys use the original
`q_proj`/`o_proj` names under `base_model.model.`), as ComfyUI single files and as LyCORIS LoKr files.
"""

import copy
import json

import mlx.core as mx
import numpy as np
import pytest
from helpers import ATTENTION_RENAMES, diffusers_dit_checkpoint, rel_err, rename_segments, require
from safetensors.numpy import save_file
from test_dit import CONFIG, XL_CONFIG, dit_inputs

from mlx_acestep.adapters import AdaptedLinear, AdapterError, AdapterStack, parse_lora_spec, read_adapter, targets
from mlx_acestep.convert import ConvertOptions, convert_checkpoints
from mlx_acestep.diffusion.loop import Denoiser
from mlx_acestep.loading import load_component

pytestmark = pytest.mark.live
TOLERANCE = 1e-4  # the bound, relative to max|reference|; measured below in the summary table
DIFFUSERS_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TO_ORIGINAL = {b: a for a, b in ATTENTION_RENAMES.items()}
# test_dit's configs with widths divisible by the quantizer's group (32), so the q8/q4 bases really are quantized.
WIDE = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16, fsq_dim=64
)
CONFIGS = {
    "2B": CONFIG | WIDE,
    "XL": XL_CONFIG
    | WIDE
    | dict(
        hidden_size=96,
        intermediate_size=192,
        num_attention_heads=6,
        encoder_hidden_size=64,
        encoder_intermediate_size=128,
        encoder_num_attention_heads=4,
        encoder_num_key_value_heads=4,
    ),
}


@pytest.fixture(scope="module", params=["2B", "XL"])
def live(request, tmp_path_factory):
    require("torch")
    require("diffusers")
    config = CONFIGS[request.param]
    root = tmp_path_factory.mktemp(f"adapters_{request.param}")
    modules = diffusers_dit_checkpoint(config, root / "src" / "acestep-v15-turbo", seed=3)
    quant = {label: ConvertOptions(quantize=label, group_size=32) for label in ("q8", "q4")}
    for label, options in (("f32", ConvertOptions()), *quant.items()):
        convert_checkpoints(root / "src", root / label, options)
    return modules["transformer"], root, config


def peft_model(transformer, seed, r=4, alpha=8.0, rslora=False, name="default", **patterns):
    """A peft LoRA on a copy of diffusers' transformer with random, non-trivial B."""
    torch = require("torch")
    peft = require("peft")
    torch.manual_seed(seed)
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=DIFFUSERS_TARGETS, use_rslora=rslora, init_lora_weights=False, **patterns
    )
    return peft.get_peft_model(copy.deepcopy(transformer), config, adapter_name=name)


def save_as_reference_trainer(model, folder, adapter="default"):
    """`save_pretrained`, then the keys and targets in the original naming, as the reference's trainer has them."""
    from safetensors.numpy import load_file

    model.save_pretrained(str(folder), selected_adapters=[adapter])
    src = folder / adapter if (folder / adapter).is_dir() else folder
    state = load_file(str(src / "adapter_model.safetensors"))
    renamed = {rename_segments(k, TO_ORIGINAL): v for k, v in state.items()}
    assert all(any(f".{p}" in k for p in ("q_proj.", "k_proj.", "v_proj.", "o_proj.")) for k in renamed)
    config = json.loads((src / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    original = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "o_proj"}
    for field in ("rank_pattern", "alpha_pattern"):
        config[field] = {original.get(k, k): v for k, v in (config.get(field) or {}).items()}
    out = folder.parent / f"{folder.name}-reference"
    out.mkdir()
    save_file(renamed, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def reference_output(transformer, x, t, context, states):
    import torch

    with torch.no_grad():
        return (
            transformer(
                hidden_states=torch.from_numpy(x),
                timestep=torch.from_numpy(t),
                timestep_r=torch.from_numpy(t),
                encoder_hidden_states=torch.from_numpy(states),
                context_latents=torch.from_numpy(context),
                return_dict=False,
            )[0]
            .float()
            .numpy()
        )


def our_output(model, x, t, context, states):
    rows = []
    for row in range(x.shape[0]):
        denoise = Denoiser(model.decoder, mx.array(states[row : row + 1]), mx.array(context[row : row + 1]))
        rows.append(np.array(denoise(mx.array(x[row : row + 1]), float(t[row])).astype(mx.float32)))
    return np.concatenate(rows)


def with_adapters(folder, *specs, fuse=False):
    """The converted DiT with adapters [(path, scale), ...] applied; returns (model, stack)."""
    model = load_component(folder, "dit")
    stack = AdapterStack()
    for i, (path, scale) in enumerate(specs):
        stack.add(path, targets(model.decoder), scale, name=f"a{i}", fuse=fuse)
    stack.apply(model.decoder)
    return model, stack


@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_a_reference_trainer_adapter_matches_peft(live, tmp_path, rslora):
    from conftest import PARITY_ERRORS

    transformer, root, config = live
    model = peft_model(transformer, seed=1, rslora=rslora)
    folder = save_as_reference_trainer(model, tmp_path / "peft")
    inputs = dit_inputs(config, length=21, seed=2)
    want = reference_output(model.get_base_model(), *inputs)
    base = reference_output(transformer, *inputs)
    assert rel_err(base, want) > 1e-2  # the adapter really changes the output
    ours, _ = with_adapters(root / "f32" / "acestep-v15-turbo", (folder, 1.0))
    err = rel_err(our_output(ours, *inputs), want)
    PARITY_ERRORS.append(
        (f"adapter {'rslora' if rslora else 'lora'} ({config['hidden_size']} wide)", "velocity", err, TOLERANCE)
    )
    assert err < TOLERANCE


def test_rank_and_alpha_patterns_match_peft(live, tmp_path):
    transformer, root, config = live
    model = peft_model(transformer, seed=2, rank_pattern={"to_q": 2}, alpha_pattern={"to_q": 5.0, "to_out.0": 1.0})
    folder = save_as_reference_trainer(model, tmp_path / "peft")
    inputs = dit_inputs(config, length=21, seed=3)
    ours, stack = with_adapters(root / "f32" / "acestep-v15-turbo", (folder, 1.0))
    assert stack.adapter("a0").deltas["layers.0.self_attn.q_proj"].rank == 2
    assert rel_err(our_output(ours, *inputs), reference_output(model.get_base_model(), *inputs)) < TOLERANCE


def test_dora_matches_peft(live, tmp_path):
    torch = require("torch")
    transformer, root, config = live
    model = peft_model(transformer, seed=15, use_dora=True)
    with torch.no_grad():  # magnitudes away from ||W||, so the rescaling is visible
        for name, p in model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.3 * torch.rand_like(p))
    folder = save_as_reference_trainer(model, tmp_path / "peft")
    inputs = dit_inputs(config, length=21, seed=4)
    want = reference_output(model.get_base_model(), *inputs)
    for mode in ("f32", "q8"):
        ours, _ = with_adapters(root / mode / "acestep-v15-turbo", (folder, 1.0))
        err = rel_err(our_output(ours, *inputs), want)
        assert err < (TOLERANCE if mode == "f32" else 2e-2), (mode, err)
    # merging is refused when the adapter is loaded, before any weight changes
    model = load_component(root / "f32" / "acestep-v15-turbo", "dit")
    before = np.array(model.decoder.layers[0].self_attn.q_proj.weight)
    with pytest.raises(AdapterError, match="DoRA adapters are applied unfused"):
        AdapterStack().add(folder, targets(model.decoder), fuse=True)
    np.testing.assert_array_equal(np.array(model.decoder.layers[0].self_attn.q_proj.weight), before)


def test_two_stacked_adapters_at_their_own_scales_match_peft(live, tmp_path):
    transformer, root, config = live
    peft = require("peft")
    model = peft_model(transformer, seed=4, r=4, alpha=8.0, name="first")
    other = peft_model(transformer, seed=5, r=2, alpha=2.0, name="second")
    model.add_adapter("second", other.peft_config["second"])
    peft.set_peft_model_state_dict(
        model, peft.get_peft_model_state_dict(other, adapter_name="second"), adapter_name="second"
    )
    inputs = dit_inputs(config, length=17, seed=6)
    only_first = reference_output(model.get_base_model(), *inputs)
    model.base_model.set_adapter(["first", "second"])  # both active, each at its own scale
    for layer in model.modules():
        if isinstance(layer, peft.tuners.lora.LoraLayer):
            layer.set_scale("first", 0.7)
            layer.set_scale("second", 1.6)
    want = reference_output(model.get_base_model(), *inputs)
    assert rel_err(want, only_first) > 1e-2
    a = save_as_reference_trainer(model, tmp_path / "first", "first")
    b = save_as_reference_trainer(other, tmp_path / "second", "second")
    ours, _ = with_adapters(root / "f32" / "acestep-v15-turbo", (a, 0.7), (b, 1.6))
    assert rel_err(our_output(ours, *inputs), want) < TOLERANCE


def lokr_file(path, transformer_targets, seed, decompose=True, rank=2, alpha=3.0):
    """A LyCORIS LoKr file on every attention projection; returns it and the dense deltas (the formula)."""
    rng = np.random.default_rng(seed)
    tensors, deltas = {}, {}
    for module, (out, inp) in transformer_targets.items():
        if "attn" not in module:
            continue
        a, b = 2, 2  # w1 [2, 2]; w2 [out/2, in/2]
        key = "lycoris_" + module.replace(".", "_")
        w1 = rng.standard_normal((a, b)).astype(np.float32)
        tensors[f"{key}.lokr_w1"] = w1
        if decompose:
            w2a = rng.standard_normal((out // a, rank)).astype(np.float32) * 0.3
            w2b = rng.standard_normal((rank, inp // b)).astype(np.float32) * 0.3
            tensors[f"{key}.lokr_w2_a"], tensors[f"{key}.lokr_w2_b"] = w2a, w2b
            w2, scale = w2a @ w2b, alpha / rank
        else:
            w2 = rng.standard_normal((out // a, inp // b)).astype(np.float32) * 0.1
            tensors[f"{key}.lokr_w2"], scale = w2, 1.0
        tensors[f"{key}.alpha"] = np.array(alpha, np.float32)
        deltas[module] = scale * np.kron(w1, w2)
    save_file(
        tensors, str(path), metadata={"algo": "lokr", "format": "lycoris", "lokr_config": json.dumps({"r": rank})}
    )
    return path, deltas


@pytest.mark.parametrize("decompose", [True, False], ids=["w2-low-rank", "w2-full"])
def test_lokr_matches_the_kronecker_formula_on_the_reference_weights(live, tmp_path, decompose):
    torch = require("torch")
    transformer, root, config = live
    ours, _ = with_adapters(root / "f32" / "acestep-v15-turbo")
    path, deltas = lokr_file(tmp_path / "style.safetensors", targets(ours.decoder), seed=7, decompose=decompose)
    merged = copy.deepcopy(transformer)
    params = dict(merged.named_parameters())
    with torch.no_grad():
        for module, delta in deltas.items():
            params[rename_segments(module + ".", ATTENTION_RENAMES) + "weight"].add_(torch.from_numpy(delta))
    inputs = dit_inputs(config, length=19, seed=8)
    want = reference_output(merged, *inputs)
    adapted, _ = with_adapters(root / "f32" / "acestep-v15-turbo", (path, 1.0))
    assert rel_err(our_output(adapted, *inputs), want) < TOLERANCE


def test_comfyui_file_equals_the_peft_folder(live, tmp_path):
    from safetensors.numpy import load_file

    transformer, root, config = live
    folder = save_as_reference_trainer(peft_model(transformer, seed=9), tmp_path / "peft")
    state = load_file(str(folder / "adapter_model.safetensors"))
    alpha = json.loads((folder / "adapter_config.json").read_text())["lora_alpha"]
    comfy = {}
    for key, value in state.items():
        key = key.replace("base_model.model.", "diffusion_model.decoder.").replace("lora_A.weight", "lora_down.weight")
        comfy[key.replace("lora_B.weight", "lora_up.weight")] = value
        comfy[key.rsplit(".", 2)[0] + ".alpha"] = np.array(alpha, np.float32)
    save_file(comfy, str(tmp_path / "comfy.safetensors"))
    inputs = dit_inputs(config, length=15, seed=3)
    a, _ = with_adapters(root / "f32" / "acestep-v15-turbo", (folder, 0.9))
    b, _ = with_adapters(root / "f32" / "acestep-v15-turbo", (tmp_path / "comfy.safetensors", 0.9))
    np.testing.assert_allclose(our_output(b, *inputs), our_output(a, *inputs), rtol=0, atol=1e-6)


def test_unload_restores_the_base_exactly_and_scale_0_is_no_adapter(live, tmp_path):
    transformer, root, config = live
    folder = save_as_reference_trainer(peft_model(transformer, seed=11), tmp_path / "peft")
    inputs = dit_inputs(config, length=13, seed=4)
    model, stack = with_adapters(root / "f32" / "acestep-v15-turbo")
    base = our_output(model, *inputs)
    modules_before = {p: id(m) for p, m in model.decoder.named_modules()}
    stack.add(folder, targets(model.decoder), 1.0, name="x")
    stack.apply(model.decoder)
    assert not np.array_equal(our_output(model, *inputs), base)
    stack.set_scale("x", 0.0)
    stack.apply(model.decoder)
    np.testing.assert_array_equal(our_output(model, *inputs), base)
    stack.clear()
    stack.apply(model.decoder)
    assert {p: id(m) for p, m in model.decoder.named_modules()} == modules_before  # the very modules back
    np.testing.assert_array_equal(our_output(model, *inputs), base)


def test_fused_equals_unfused(live, tmp_path):
    transformer, root, config = live
    folder = save_as_reference_trainer(peft_model(transformer, seed=12), tmp_path / "peft")
    inputs = dit_inputs(config, length=13, seed=5)
    side, _ = with_adapters(root / "f32" / "acestep-v15-turbo", (folder, 0.8))
    fused, stack = with_adapters(root / "f32" / "acestep-v15-turbo", (folder, 0.8), fuse=True)
    assert not any(type(m).__name__ == "AdaptedLinear" for _, m in fused.decoder.named_modules())
    assert rel_err(our_output(fused, *inputs), our_output(side, *inputs)) < 1e-5
    stack.set_scale("a0", 0.5)
    assert stack.needs_fresh_weights(fused.decoder)  # a merged adapter cannot be re-scaled in place


@pytest.mark.parametrize("mode", ["q8", "q4"])
def test_adapters_on_a_quantized_base(live, tmp_path, mode):
    from conftest import PARITY_ERRORS

    transformer, root, config = live
    folder = save_as_reference_trainer(peft_model(transformer, seed=13), tmp_path / "peft")
    inputs = dit_inputs(config, length=21, seed=6)
    full, _ = with_adapters(root / "f32" / "acestep-v15-turbo", (folder, 1.0))
    quant, _ = with_adapters(root / mode / "acestep-v15-turbo", (folder, 1.0))
    import mlx.nn as nn

    assert isinstance(quant.decoder.layers[0].cross_attn.k_proj.base, nn.QuantizedLinear)
    a, b = our_output(full, *inputs), our_output(quant, *inputs)
    cosine = float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))
    PARITY_ERRORS.append(
        (
            f"adapter on {mode} ({config['hidden_size']} wide) 1-cosine",
            "velocity",
            1 - cosine,
            1e-3 if mode == "q8" else None,
        )
    )
    if mode == "q8":
        assert cosine >= 0.999
    with pytest.warns(UserWarning, match="re-quantized"):
        fused, _ = with_adapters(root / mode / "acestep-v15-turbo", (folder, 1.0), fuse=True)
    assert np.isfinite(our_output(fused, *inputs)).all()


# -- bad input: one line, naming the file and the key or value ---------------------------------------------


@pytest.fixture
def decoder_targets(live):
    return targets(load_component(live[1] / "f32" / "acestep-v15-turbo", "dit").decoder)


def test_bad_adapters_are_one_line_errors(live, decoder_targets, tmp_path):
    transformer, _, _ = live
    good = save_as_reference_trainer(peft_model(transformer, seed=14), tmp_path / "peft")
    stack = AdapterStack()

    def error(path, **kw):
        with pytest.raises(AdapterError) as e:
            stack.add(path, decoder_targets, **kw)
        assert "\n" not in str(e.value)
        return str(e.value)

    (tmp_path / "empty").mkdir()
    assert "no adapter_config.json" in error(tmp_path / "empty")
    save_file({"something.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "odd.safetensors"))
    assert "no LoRA or LoKr keys" in error(tmp_path / "odd.safetensors") and "something.weight" in error(
        tmp_path / "odd.safetensors"
    )
    wrong_rank = tmp_path / "rank"
    wrong_rank.mkdir()
    (wrong_rank / "adapter_model.safetensors").write_bytes((good / "adapter_model.safetensors").read_bytes())
    config = json.loads((good / "adapter_config.json").read_text()) | {"r": 16}
    (wrong_rank / "adapter_config.json").write_text(json.dumps(config))
    assert "rank 4 in the weights, 16 in adapter_config.json" in error(wrong_rank)
    other = {
        "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 999), np.float32),
        "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((48, 4), np.float32),
    }
    save_file(other, str(tmp_path / "other.safetensors"))
    assert "another model" in error(tmp_path / "other.safetensors")
    outside = {
        "base_model.model.encoder.lyric_encoder.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 48), np.float32)
    }
    save_file(outside, str(tmp_path / "outside.safetensors"))
    assert "outside the decoder" in error(tmp_path / "outside.safetensors")
    for bad in (-1.0, float("nan"), float("inf")):
        assert "must be a number from 0 to 10" in error(good, scale=bad)
    assert "no such adapter" in error(tmp_path / "missing.safetensors")
    # a non-finite alpha would merge NaN into the weights: refused, in a ComfyUI file and in a PEFT config
    from safetensors.numpy import load_file

    comfy = {}
    for key, value in load_file(str(good / "adapter_model.safetensors")).items():
        key = key.replace("base_model.model.", "diffusion_model.decoder.").replace("lora_A.weight", "lora_down.weight")
        comfy[key.replace("lora_B.weight", "lora_up.weight")] = value
        comfy[key.rsplit(".", 2)[0] + ".alpha"] = np.array(np.inf, np.float32)
    save_file(comfy, str(tmp_path / "inf.safetensors"))
    assert "is not a finite scale" in error(tmp_path / "inf.safetensors", fuse=True)
    (wrong_rank / "adapter_config.json").write_text(json.dumps(config | {"r": 4, "lora_alpha": float("nan")}))
    assert "lora_alpha must be a positive number, got nan" in error(wrong_rank)
    assert stack.names() == []  # nothing half-applied


def test_lora_specs_from_the_command_line(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"")
    assert parse_lora_spec(str(tmp_path / "a.safetensors")) == (str(tmp_path / "a.safetensors"), 1.0)
    assert parse_lora_spec(f"{tmp_path}/a.safetensors:0.5") == (f"{tmp_path}/a.safetensors", 0.5)
    with pytest.raises(AdapterError, match="not a scale"):
        parse_lora_spec(f"{tmp_path}/a.safetensors:loud")
    with pytest.raises(AdapterError, match="a number from 0 to 10"):
        parse_lora_spec(f"{tmp_path}/a.safetensors:-2")


# -- the PEFT format through its one module; the stack's own rules ------------------------------------------


def test_a_peft_folder_we_write_is_read_back_and_by_peft(live, tmp_path):
    """What the trainer writes (adapters.peft) reads back exactly, and peft itself loads it into the reference
    model with the same output as ours."""
    import dataclasses

    torch = require("torch")
    peft_lib = require("peft")
    from safetensors.numpy import load_file

    from mlx_acestep.adapters import peft
    from mlx_acestep.adapters.deltas import LoRADelta

    transformer, root, config = live
    model = load_component(root / "f32" / "acestep-v15-turbo", "dit")
    rng = np.random.default_rng(21)
    deltas = {}
    for path, (out, inp) in targets(model.decoder).items():
        if ".self_attn." in path or ".cross_attn." in path:
            down = rng.standard_normal((4, inp)).astype(np.float32) * 0.2
            up = rng.standard_normal((out, 4)).astype(np.float32) * 0.2
            deltas[path] = LoRADelta(mx.array(down), mx.array(up), 6.0 / 4)
    folder = tmp_path / "ours"
    peft.save_peft_folder(folder, deltas, peft.peft_config(4, 6.0, 0.0, ("self", "cross"), "test"), "card\n")
    adapter = read_adapter(folder, targets(model.decoder))
    assert adapter.format == "peft" and set(adapter.deltas) == set(deltas)
    for path, delta in deltas.items():
        got = adapter.deltas[path]
        np.testing.assert_array_equal(np.array(got.down), np.array(delta.down))
        np.testing.assert_array_equal(np.array(got.up), np.array(delta.up))
        assert got.scale == 1.5
    # peft reads the same folder (its keys in diffusers' names, the config as written)
    written = json.loads((folder / "adapter_config.json").read_text()) | {"target_modules": DIFFUSERS_TARGETS}
    fields = {f.name for f in dataclasses.fields(peft_lib.LoraConfig) if f.init} - {"peft_type"}
    reference = peft_lib.get_peft_model(
        copy.deepcopy(transformer), peft_lib.LoraConfig(**{k: v for k, v in written.items() if k in fields})
    )
    state = load_file(str(folder / "adapter_model.safetensors"))
    renamed = {rename_segments(k, ATTENTION_RENAMES): torch.from_numpy(v) for k, v in state.items()}
    loaded = peft_lib.set_peft_model_state_dict(reference, renamed)
    assert not loaded.unexpected_keys
    inputs = dit_inputs(config, length=17, seed=9)
    want = reference_output(reference.get_base_model(), *inputs)
    assert rel_err(want, reference_output(transformer, *inputs)) > 1e-2  # the adapter really acts
    ours, _ = with_adapters(root / "f32" / "acestep-v15-turbo", (folder, 1.0))
    assert rel_err(our_output(ours, *inputs), want) < TOLERANCE


def test_removing_an_adapter_leaves_the_base_weights_untouched(live, tmp_path):
    import mlx.nn as nn

    transformer, root, _ = live
    folder = save_as_reference_trainer(peft_model(transformer, seed=16), tmp_path / "peft")
    model, stack = with_adapters(root / "q8" / "acestep-v15-turbo")
    before = {k: np.array(v) for k, v in nn.utils.tree_flatten(model.decoder.parameters())}
    stack.add(folder, targets(model.decoder), 0.7, name="x")
    stack.apply(model.decoder)
    assert isinstance(model.decoder.layers[0].self_attn.q_proj, AdaptedLinear)
    stack.remove("x")
    stack.apply(model.decoder)
    after = {k: np.array(v) for k, v in nn.utils.tree_flatten(model.decoder.parameters())}
    assert after.keys() == before.keys()  # the same tree: no wrapper, no adapter left behind
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)
    assert not any(isinstance(m, AdaptedLinear) for _, m in model.decoder.named_modules())


def test_one_delta_at_two_scales_in_two_entries_and_two_stacks(live, tmp_path):
    """The scale belongs to the entry, not to the delta: one adapter's deltas used twice never share a scale."""
    import dataclasses

    peft_lib = require("peft")
    transformer, root, config = live
    reference = peft_model(transformer, seed=17)
    folder = save_as_reference_trainer(reference, tmp_path / "peft")

    def peft_at(scale):
        for layer in reference.modules():
            if isinstance(layer, peft_lib.tuners.lora.LoraLayer):
                layer.set_scale("default", scale)
        return reference_output(reference.get_base_model(), *inputs)

    inputs = dit_inputs(config, length=15, seed=10)
    one, two = (load_component(root / "f32" / "acestep-v15-turbo", "dit") for _ in range(2))
    adapter = read_adapter(folder, targets(one.decoder), name="x")
    twice = AdapterStack()
    twice.add_adapter(adapter, 0.3)
    twice.add_adapter(dataclasses.replace(adapter, name="y"), 0.9)  # the very same delta objects
    twice.apply(one.decoder)
    other = AdapterStack()
    other.add_adapter(adapter, 0.5)
    other.apply(two.decoder)  # after `twice` was applied: it must not change what `one` computes
    assert rel_err(our_output(one, *inputs), peft_at(1.2)) < TOLERANCE  # 0.3 + 0.9: LoRA is linear in its scale
    assert rel_err(our_output(two, *inputs), peft_at(0.5)) < TOLERANCE


def test_a_peft_config_without_lora_alpha_takes_pefts_default(live, tmp_path):
    """PEFT reads a missing `lora_alpha` as LoraConfig's default, 8 (peft 0.21 `LoraConfig.lora_alpha`), not as the
    rank: at rank 4 the scale is 2, not 1. The file is PEFT's own, the reference is PEFT loading it."""
    peft = require("peft")
    transformer, root, config = live
    assert peft.LoraConfig().lora_alpha == 8  # the default this test stands on
    model = peft_model(transformer, seed=6, r=4, alpha=8)
    folder = save_as_reference_trainer(model, tmp_path / "peft")
    saved = json.loads((folder / "adapter_config.json").read_text())
    del saved["lora_alpha"]
    (folder / "adapter_config.json").write_text(json.dumps(saved))
    inputs = dit_inputs(config, length=21, seed=7)
    ours, stack = with_adapters(root / "f32" / "acestep-v15-turbo", (folder, 1.0))
    assert stack.adapter("a0").deltas["layers.0.self_attn.q_proj"].scale == 2.0
    assert rel_err(our_output(ours, *inputs), reference_output(model.get_base_model(), *inputs)) < TOLERANCE
