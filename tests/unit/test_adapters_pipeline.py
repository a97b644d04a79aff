"""Adapters through the pipeline and the CLI on the fixture checkpoints: a LoRA equals its weights merged into
the checkpoint beforehand, scale 0 is no adapter, every task applies it, and the API and `--lora` behave."""

import json
import shutil

import helpers
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mlx_acestep.adapters import AdapterError
from mlx_acestep.convert import convert_checkpoints
from mlx_acestep.errors import AceStepError
from mlx_acestep.pipeline import ACEStep, ModelFolders


def run_cli(args, cwd):
    """The command line with its own model cache."""
    return helpers.run_cli(args, cwd, env={"MLX_ACESTEP_CACHE": str(cwd / "cache")})


RANK, ALPHA = 4, 6.0
NEEDED = ("Qwen3-Embedding-0.6B", "vae")


def folders(root, dit="acestep-v15-turbo"):
    return ModelFolders(root / "Qwen3-Embedding-0.6B", root / dit, root / "vae")


def make_adapter(fixtures, dit, folder, seed=0, layers=None):
    """A PEFT folder as the reference's trainer writes it, for the fixture DiT; returns it and the merged deltas."""
    state = load_file(str(fixtures / "checkpoints" / dit / "model.safetensors"))
    rng = np.random.default_rng(seed)
    tensors, deltas = {}, {}
    for key, w in state.items():
        parts = key.split(".")
        if not (
            key.startswith("decoder.layers.")
            and parts[3] in ("self_attn", "cross_attn")
            and parts[4] in ("q_proj", "k_proj", "v_proj", "o_proj")
            and parts[-1] == "weight"
        ):
            continue
        if layers is not None and int(parts[2]) not in layers:
            continue
        a = (rng.standard_normal((RANK, w.shape[1])) * 0.3).astype(np.float32)
        b = (rng.standard_normal((w.shape[0], RANK)) * 0.3).astype(np.float32)
        module = ".".join(parts[1:-1])
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
        deltas[key] = (ALPHA / RANK) * (b @ a)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": RANK,
                "lora_alpha": ALPHA,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                "base_model_name_or_path": "ACE-Step/Ace-Step1.5/acestep-v15-turbo",
            }
        )
    )
    return folder, deltas


@pytest.fixture(scope="module")
def adapter(fixtures, tmp_path_factory):
    return make_adapter(fixtures, "acestep-v15-turbo", tmp_path_factory.mktemp("lora") / "style")


@pytest.fixture(scope="module")
def merged(fixtures, adapter, tmp_path_factory):
    """The fixture checkpoints with the adapter merged into the turbo DiT's weights, converted."""
    _, deltas = adapter
    root = tmp_path_factory.mktemp("merged")
    for name in (*NEEDED, "acestep-v15-turbo"):
        shutil.copytree(fixtures / "checkpoints" / name, root / "src" / name)
    file = root / "src" / "acestep-v15-turbo" / "model.safetensors"
    state = load_file(str(file))
    for key, delta in deltas.items():
        state[key] = (state[key].astype(np.float64) + delta).astype(state[key].dtype)
    save_file(state, str(file))
    convert_checkpoints(root / "src", root / "mlx")
    return root / "mlx"


def song(pipe, **kw):
    return pipe.generate("soft rain", duration=5, seed=5, **kw).latents  # 5 s: the DiT's 128-frame minimum


@pytest.fixture(scope="module")
def baked(merged):
    """The song of the checkpoint with the adapter merged in (made once: two tests compare with it)."""
    return song(ACEStep(folders(merged)))


def test_a_lora_equals_its_weights_merged_into_the_checkpoint(converted, baked, adapter):
    pipe = ACEStep(folders(converted))
    with_lora = song(pipe, loras=[(adapter[0], 1.0)])
    assert np.abs(with_lora - baked).max() <= 1e-4 * np.abs(baked).max()
    plain = song(pipe)
    assert np.abs(plain - baked).max() > 1e-2 * np.abs(baked).max()  # the adapter matters
    np.testing.assert_array_equal(song(pipe, loras=[(adapter[0], 0.0)]), plain)  # scale 0: no adapter, exactly
    np.testing.assert_array_equal(song(pipe), plain)  # a call's adapters are gone after it


def test_load_scale_unload(converted, baked, adapter):
    pipe = ACEStep(folders(converted))
    plain = song(pipe)
    summary = pipe.load_lora(adapter[0], scale=1.0).summary()
    assert "peft" in summary and f"rank {RANK}" in summary and f"alpha/r {ALPHA / RANK:g}" in summary
    assert pipe.loras() == [("style", 1.0)]
    assert np.abs(song(pipe) - baked).max() <= 1e-4 * np.abs(baked).max()
    pipe.set_lora_scale("style", 0.0)
    np.testing.assert_array_equal(song(pipe), plain)
    pipe.set_lora_scale("style", 1.0)
    pipe.unload_lora()
    assert pipe.loras() == []
    np.testing.assert_array_equal(song(pipe), plain)


def test_fused_adapter_equals_unfused_and_unloads_to_the_base(converted, adapter):
    """With keep_loaded=False (the CLI's): the DiT loads fresh each call, and the stack is applied (fused) each time."""
    pipe = ACEStep(folders(converted), keep_loaded=False)
    plain = song(pipe)
    unfused = song(pipe, loras=[(adapter[0], 0.8)])
    pipe.load_lora(adapter[0], scale=0.8, fuse=True)
    fused = song(pipe)
    assert np.abs(fused - unfused).max() <= 1e-5 * np.abs(unfused).max()
    pipe.unload_lora("style")  # the DiT's weights come back from disk
    np.testing.assert_array_equal(song(pipe), plain)


@pytest.mark.parametrize("task, extra", [("cover", {}), ("repaint", {"repaint_start": 2.0, "repaint_end": 4.0})])
def test_every_task_applies_the_adapter(converted, adapter, task, extra):
    pipe = ACEStep(folders(converted))
    source = np.random.default_rng(1).standard_normal((130, 64)).astype(np.float32)  # 5.2 s, above the DiT's 128
    kw = dict(task=task, src_latents=source, seed=2, **extra)
    plain = pipe.generate("jazz", **kw).latents
    adapted = pipe.generate("jazz", loras=[(adapter[0], 1.0)], **kw).latents
    assert np.abs(adapted - plain).max() > 1e-2 * np.abs(plain).max()


def test_base_model_takes_adapters_too(fixtures, converted, tmp_path):
    folder, _ = make_adapter(fixtures, "acestep-v15-base", tmp_path / "base-style", layers={0})
    pipe = ACEStep(folders(converted, "acestep-v15-base"))
    plain = pipe.generate("x", duration=5, seed=1, steps=2).latents
    adapted = pipe.generate("x", duration=5, seed=1, steps=2, loras=[folder]).latents
    assert np.abs(adapted - plain).max() > 1e-3 * np.abs(plain).max()


def test_bad_loras_in_the_api_fail_before_any_work(converted, adapter, tmp_path):
    pipe = ACEStep(folders(converted))
    for loras, needle in (
        ([(adapter[0], -1)], "must be a number from 0 to 10"),
        ("style", "must be a list"),
        ([(tmp_path / "nope", 1.0)], "no such adapter"),
    ):
        with pytest.raises(AceStepError, match=needle):
            pipe.generate("x", duration=10, loras=loras)
    with pytest.raises(AdapterError, match="no adapter named 'ghost'"):
        pipe.set_lora_scale("ghost", 1.0)
    pipe.load_lora(adapter[0])
    with pytest.raises(AdapterError, match="already loaded"):
        pipe.load_lora(adapter[0])


def test_the_cli_applies_loras_and_refuses_bad_ones(converted, adapter, tmp_path):
    import soundfile as sf

    done = run_cli(
        [
            "generate",
            "soft rain",
            "--model",
            str(converted),
            "--duration",
            "5",
            "--seed",
            "1",
            "--lora",
            f"{adapter[0]}:0.5",
            "-o",
            "a.wav",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "adapter style: peft" in done.stderr and f"rank {RANK}" in done.stderr
    assert sf.info(str(tmp_path / "a.wav")).duration == pytest.approx(5, abs=0.05)
    (tmp_path / "empty").mkdir()
    for spec, needle in (
        (f"{adapter[0]}:loud", "is not a scale"),
        (str(tmp_path / "empty"), "no adapter_config.json"),
        (f"{adapter[0]}:-1", "a number from 0 to 10"),
    ):
        bad = run_cli(
            ["generate", "x", "--model", str(converted), "--duration", "10", "--lora", spec, "-o", "b.wav"], tmp_path
        )
        helpers.assert_one_line_error(bad, needle)
        assert not (tmp_path / "b.wav").exists()


def test_adapters_from_an_app_thread(converted, adapter):
    """An app calling from its own thread: the call's adapter files are read on the pipeline's thread."""
    import threading

    pipe = ACEStep(folders(converted))
    here = song(pipe, loras=[(adapter[0], 1.0)])
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("latents", song(pipe, loras=[(adapter[0], 1.0)])))
    worker.start()
    worker.join()
    np.testing.assert_array_equal(out["latents"], here)
