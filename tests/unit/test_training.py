"""LoRA training: one step against torch (diffusers' transformer + peft, autograd), preprocessing against the
pipeline's own path, learning on the fixture model, exact resume, the PEFT folder through `--lora`, and the CLI."""

import importlib
import json
import os
import shutil
import threading
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import soundfile as sf
from helpers import (
    ATTENTION_RENAMES,
    assert_one_line_error,
    diffusers_dit_checkpoint,
    rel_err,
    rename_segments,
    require,
    run_cli,
)
from test_adapters import CONFIGS
from test_dit import dit_inputs

from mlx_acestep.checkpoint import Checkpoint
from mlx_acestep.convert import convert_checkpoints
from mlx_acestep.engine import Engine
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component
from mlx_acestep.pipeline import ACEStep, ModelFolders
from mlx_acestep.training import TrainConfig, TrainingStopped, scan_dataset, train_lora
from mlx_acestep.training.lora import attach_lora
from mlx_acestep.training.objective import flow_loss
from mlx_acestep.training.preprocess import clip_condition, preprocess

# One worker for the whole module: its tests share the clips' preprocessing (the fixture VAE is slow on a CPU).
pytestmark = pytest.mark.xdist_group("training")


def write_song(path, seconds, freq, caption=None, lyrics=None):
    t = np.arange(int(seconds * 48000)) / 48000
    wave = 0.4 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    sf.write(str(path), np.stack([wave, np.roll(wave, 100)], 1).astype(np.float32), 48000)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)
    if lyrics is not None:
        path.with_name(path.stem + ".lyrics.txt").write_text(lyrics)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three 5.2 s clips with sidecar captions (the shortest the trainer takes; the fixture VAE is slow)."""
    folder = tmp_path_factory.mktemp("songs")
    for i, (freq, caption) in enumerate(
        [(220, "a slow sine drone"), (330, "a bright sine line"), (440, "a high sine")]
    ):
        write_song(folder / f"song{i}.wav", 5.2, freq, caption, "[verse]\nla la" if i == 0 else None)
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("train_cache")  # shared: each clip is preprocessed once for the module


# -- one step against torch ---------------------------------------------------------------------------------


@pytest.mark.live
def test_one_training_step_matches_torch_autograd(tmp_path):
    torch = require("torch")
    peft = require("peft")
    config = CONFIGS["2B"]
    modules = diffusers_dit_checkpoint(config, tmp_path / "src" / "acestep-v15-turbo", seed=21)
    convert_checkpoints(tmp_path / "src", tmp_path / "mlx")
    decoder = load_component(tmp_path / "mlx" / "acestep-v15-turbo", "dit").decoder
    decoder.checkpointing = True  # the backward pass through recomputed layers is what training runs
    deltas = attach_lora(decoder, ("self", "cross"), rank=4, alpha=8.0, dropout=0.0, key=mx.random.key(3))
    rng = np.random.default_rng(4)
    for d in deltas.values():  # B != 0, so A's gradient is not zero
        d.up = mx.array(rng.standard_normal(d.up.shape).astype(np.float32) * 0.1)
    x0, _, context, states = dit_inputs(config, length=18, seed=5)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([0.75, 0.3], np.float32)

    loss, grads = nn.value_and_grad(decoder, flow_loss)(
        decoder, *(mx.array(a) for a in (x0, noise, t, context, states))
    )
    grads = dict(nn.utils.tree_flatten(grads))

    model = peft.get_peft_model(
        modules["transformer"],
        peft.LoraConfig(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
    )
    params = dict(model.named_parameters())
    for path, d in deltas.items():
        prefix = "base_model.model." + rename_segments(path + ".", ATTENTION_RENAMES)
        with torch.no_grad():
            params[prefix + "lora_A.default.weight"].copy_(torch.from_numpy(np.array(d.down)))
            params[prefix + "lora_B.default.weight"].copy_(torch.from_numpy(np.array(d.up)))
    tt = torch.from_numpy(t)
    xt = tt[:, None, None] * torch.from_numpy(noise) + (1 - tt[:, None, None]) * torch.from_numpy(x0)
    v = model.get_base_model()(
        hidden_states=xt,
        timestep=tt,
        timestep_r=tt,
        encoder_hidden_states=torch.from_numpy(states),
        context_latents=torch.from_numpy(context),
        return_dict=False,
    )[0]
    want = torch.mean((v - torch.from_numpy(noise - x0)) ** 2)
    want.backward()
    assert abs(loss.item() - want.item()) <= 1e-5 * abs(want.item())
    worst = 0.0
    for path in deltas:
        prefix = "base_model.model." + rename_segments(path + ".", ATTENTION_RENAMES)
        for ours, theirs in (("down", "lora_A"), ("up", "lora_B")):
            got = np.array(grads[f"{path}.adapters.training.{ours}"])
            ref = params[f"{prefix}{theirs}.default.weight"].grad.numpy()
            worst = max(worst, rel_err(got, ref))
    assert worst < 1e-4, worst


def test_dropout_gradients_are_those_of_the_forwards_masks_under_checkpointing(converted):
    """A checkpointed layer runs its forward again in the backward pass: its dropout masks must be the forward's,
    so the gradient with checkpointing equals the one without (unseeded masks gave another mask's gradient)."""
    from mlx_acestep.training.lora import seed_dropout

    config = json.loads((converted / "acestep-v15-turbo" / "config.json").read_text())
    decoder = load_component(converted / "acestep-v15-turbo", "dit").decoder
    deltas = attach_lora(decoder, ("self", "cross"), rank=4, alpha=8.0, dropout=0.3, key=mx.random.key(3))
    rng = np.random.default_rng(6)
    for d in deltas.values():
        d.up = mx.array(rng.standard_normal(d.up.shape).astype(np.float32) * 0.1)
    x0, _, context, states = dit_inputs(config, length=18, seed=7)
    args = [
        mx.array(a)
        for a in (
            x0,
            rng.standard_normal(x0.shape).astype(np.float32),
            np.array([0.75, 0.3], np.float32),
            context,
            states,
        )
    ]

    def gradient(checkpointing, seed):
        decoder.checkpointing = checkpointing
        seed_dropout(deltas, seed)
        loss, grads = nn.value_and_grad(decoder, flow_loss)(decoder, *args)
        return loss.item(), np.concatenate([np.array(g).ravel() for _, g in nn.utils.tree_flatten(grads)])

    plain_loss, plain = gradient(False, 11)
    loss, checkpointed = gradient(True, 11)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert rel_err(checkpointed, plain) < 1e-5
    _, other = gradient(True, 12)
    assert rel_err(other, plain) > 1e-2  # the masks are really there: another seed, another gradient


def test_the_preprocess_cache_is_keyed_on_every_model_folder_it_used(dataset, tmp_path):
    """The VAE, the text encoder and the DiT are cache entries of their own: a new VAE (or text encoder) with the
    same DiT must not reuse latents (or conditions) the old one made."""

    class Counting(Engine):  # counts what preprocessing computes; the tensors do not matter here
        encoded = 0

        def encode_audio(self, vae, wave, seed, chunk, overlap, progress=None):
            self.encoded += 1
            return mx.zeros((125, 64))

        def encode_text(self, text_encoder, tokens):
            return None

        def condition(self, dit, text, job):
            return mx.zeros((1, 7, 16)), None

    class Checkpoint:  # what preprocessing reads of a checkpoint, with nothing to load
        def __init__(self, vae="vae", text="text"):
            self.folders = ModelFolders(text, "dit", vae)
            self.tokenizer = SimpleNamespace(batch=lambda texts, n: (np.zeros((1, 1), int), np.ones((1, 1), bool)))
            self.config = SimpleNamespace(timbre_fix_frame=750)

        def load(self, step):
            return None

    clips = scan_dataset(dataset)[:1]
    engines = [Counting(None) for _ in range(4)]
    checkpoints = [Checkpoint(), Checkpoint(vae="other vae"), Checkpoint(text="other text"), Checkpoint()]
    reported = []
    for checkpoint, engine in zip(checkpoints, engines):
        reported.append([])
        preprocess(checkpoint, clips, tmp_path, seed=0, engine=engine, progress=lambda *p: reported[-1].append(p))
    assert [e.encoded for e in engines] == [1, 1, 1, 0]  # the last one is the first again: from the cache
    assert reported[0] == [(0, 2), (1, 2), (2, 2)]  # the clip's audio, then its condition
    assert reported[-1] == [(2, 2)]  # a cached clip is done at once


def test_training_times_per_family():
    """Turbo: the shift-3 table's values, uniformly; base/SFT: sigmoid(-0.4 + z) (mean 0.41, median sigmoid(-0.4))."""
    from mlx_acestep.diffusion.flow import training_times as sample_t
    from mlx_acestep.diffusion.sampler import TURBO_TABLES

    turbo = np.array(sample_t("turbo", 8000, mx.random.key(0)))
    values, counts = np.unique(np.round(turbo, 6), return_counts=True)
    np.testing.assert_allclose(sorted(values), sorted(np.round(TURBO_TABLES[3], 6)), atol=1e-6)
    assert counts.min() > 850  # ~1000 each
    base = np.array(sample_t("base", 20000, mx.random.key(1)))
    assert abs(np.median(base) - 1 / (1 + np.exp(0.4))) < 0.01 and 0 < base.min() and base.max() < 1


# -- preprocessing is the pipeline's own path ---------------------------------------------------------------


def test_preprocessing_equals_what_generation_uses(converted, dataset, cache):
    """The trainer's preprocessing runs the engine generation runs: its latents are `encode_audio`'s, its
    condition for a clip's request is what generate hands the sampler for that request, its context the same."""
    pipe = ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae"))
    checkpoint = Checkpoint(pipe.folders)
    clips = scan_dataset(dataset)
    cached = preprocess(checkpoint, clips[:1], cache / "preprocessed", seed=42)
    np.testing.assert_array_equal(
        np.array(cached[0]["target_latents"]), np.array(pipe.encode_audio(clips[0].path, seed=42))
    )
    seen = {}

    class Spy(Engine):  # what generate hands the sampler
        def denoise(self, dit, condition, noise, settings, edit=None, decoder=None):
            seen["states"], seen["context"] = np.array(condition[0]), np.array(condition[1])
            return super().denoise(dit, condition, noise, settings, edit, decoder)

    pipe.engine = Spy(pipe.silence_latent)
    # 10 s: the shortest song generate renders; the trainer writes each clip's own duration the same way
    pipe.generate(clips[0].caption, clips[0].lyrics, duration=10, seed=1, thinking=False)
    engine = checkpoint.engine()
    modules = checkpoint.load("text_encoder"), checkpoint.load("condition")
    states = np.array(clip_condition(checkpoint, engine, *modules, clips[0], 250))
    np.testing.assert_allclose(states, seen["states"][0], rtol=0, atol=1e-6 * np.abs(seen["states"]).max())
    context = np.array(engine.text2music_context(checkpoint.load("denoiser"), 250, 1, mx.float32))
    np.testing.assert_array_equal(context, seen["context"])


# -- learning, resuming, the adapter it writes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(converted, dataset, cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "style"
    config = TrainConfig(rank=8, alpha=16.0, dropout=0.0, steps=200, lr=3e-3, warmup=10, grad_accum=1, crop_seconds=5)
    train_lora(dataset, out, config, model=converted, cache_dir=cache)
    return out, config


def test_the_loss_falls_and_the_adapter_pulls_samples_toward_the_clip(trained, converted, dataset, cache):
    out, _ = trained
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 200
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < 0.8 * first, (first, last)  # the logged loss (random t and noise per step): measured 2.47 -> 1.75
    # The same loss at fixed noise and every turbo time, over the clips: with the adapter against without it.
    from mlx_acestep.adapters import AdapterStack, targets
    from mlx_acestep.diffusion.sampler import TURBO_TABLES

    pipe = ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae"))
    clips = preprocess(Checkpoint(pipe.folders), scan_dataset(dataset), cache / "preprocessed", seed=42)
    model = load_component(converted / "acestep-v15-turbo", "dit")
    context = Engine(pipe.silence_latent).text2music_context(model, 125, 1, mx.float32)

    def held_loss():
        total = 0.0
        for n, c in enumerate(clips):
            x0 = c["target_latents"][None, :125]
            noise = mx.random.normal(x0.shape, key=mx.random.key(100 + n))
            for t in TURBO_TABLES[3]:
                total += flow_loss(
                    model.decoder, x0, noise, mx.array([t]), context, c["encoder_hidden_states"][None]
                ).item()
        return total / (len(clips) * 8)

    before = held_loss()
    stack = AdapterStack()
    stack.add(out, targets(model.decoder))
    stack.apply(model.decoder)
    after = held_loss()
    print(f"held-out-noise loss {before:.3f} -> {after:.3f}; logged {first:.3f} -> {last:.3f}")
    assert after < 0.7 * before, (before, after)
    cached = clips
    target = np.array(cached[0]["target_latents"])
    frames = target.shape[0]
    kw = dict(duration=10, seed=7, thinking=False)
    without = pipe.generate(cached[0]["caption"], **kw).latents[0, :frames]
    with_adapter = pipe.generate(cached[0]["caption"], loras=[(out, 1.0)], **kw).latents[0, :frames]
    mse = lambda a: float(np.mean((a - target) ** 2))  # noqa: E731
    assert mse(with_adapter) < mse(without), (mse(with_adapter), mse(without))


def test_the_output_is_a_peft_folder_in_the_reference_naming(trained):
    out, config = trained
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert (adapter_config["peft_type"], adapter_config["r"], adapter_config["lora_alpha"]) == ("LORA", 8, 16.0)
    assert adapter_config["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    from safetensors.numpy import load_file

    keys = load_file(str(out / "adapter_model.safetensors"))
    assert keys and all(
        k.startswith("base_model.model.layers.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys
    )
    assert "## Settings" in (out / "README.md").read_text()


def test_resuming_continues_exactly(converted, dataset, cache, tmp_path):
    from safetensors.numpy import load_file

    config = TrainConfig(rank=4, alpha=8.0, steps=4, lr=1e-3, warmup=2, grad_accum=2, crop_seconds=5, save_every=2)
    straight = train_lora(dataset, tmp_path / "straight", config, model=converted, cache_dir=cache)
    half = TrainConfig(**{**config.__dict__, "steps": 2})
    train_lora(dataset, tmp_path / "resumed", half, model=converted, cache_dir=cache)
    resumed = train_lora(dataset, tmp_path / "resumed", config, model=converted, cache_dir=cache, resume=True)
    a, b = load_file(str(straight / "adapter_model.safetensors")), load_file(str(resumed / "adapter_model.safetensors"))
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7)
    logs = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert logs == [1, 2, 3, 4]
    assert json.loads((resumed / "checkpoint" / "step.json").read_text()) == {"step": 4}  # the checkpoint's own step
    # killed after the last checkpoint, before the adapter folder was written: a resume writes it
    (resumed / "adapter_model.safetensors").unlink()
    train_lora(dataset, resumed, config, model=converted, cache_dir=cache, resume=True)
    np.testing.assert_array_equal(load_file(str(resumed / "adapter_model.safetensors"))[k], b[k])

    def refused(match, cfg=config, model=converted):
        with pytest.raises(AceStepError, match=match) as info:
            train_lora(dataset, resumed, cfg, model=model, cache_dir=cache, resume=True)
        assert "\n" not in str(info.value)

    # what a resumed run would silently ignore or get wrong is refused, before anything loads
    refused("already trained 4 steps")
    more = TrainConfig(**{**config.__dict__, "steps": 6})
    refused(r"continues the run as it was started: rank 4 \(asked 8\)", TrainConfig(**{**more.__dict__, "rank": 8}))
    refused("trained on --model .+, not tiny", more, "tiny")
    state = (resumed / "train_state.json").read_text()
    (resumed / "train_state.json").write_text("[]")
    refused("not a training state this trainer wrote", more)
    (resumed / "train_state.json").write_text(state)
    (resumed / "checkpoint" / "optimizer.safetensors").write_bytes(b"garbage")
    refused("optimizer.safetensors: cannot be read", more)
    # killed between the two renames of a checkpoint swap: the previous checkpoint is taken back
    (resumed / "checkpoint" / "optimizer.safetensors").unlink()
    os.rename(resumed / "checkpoint", resumed / ".checkpoint.99999-deadbeef.old")
    refused("optimizer.safetensors: cannot be read", more)  # it is found again (and its damage named)
    shutil.rmtree(resumed / "checkpoint")
    refused("holds no adapter", more)


def test_the_adapter_trains_in_float32_on_a_bfloat16_base(converted):
    """The frozen base may be bf16 (or q8/q4); the trained factors and their optimizer state stay float32."""
    decoder = load_component(converted / "acestep-v15-turbo", "dit").decoder
    decoder.set_dtype(mx.bfloat16)
    attach_lora(decoder, ("self", "cross"), rank=4, alpha=8.0, dropout=0.0, key=mx.random.key(3))
    dtypes = {v.dtype for _, v in nn.utils.tree_flatten(decoder.trainable_parameters())}
    assert dtypes == {mx.float32}
    x = mx.zeros((1, 8, decoder.layers[0].self_attn.q_proj.base.weight.shape[1]), mx.bfloat16)
    assert decoder.layers[0].self_attn.q_proj(x).dtype == mx.bfloat16  # computed in the base's dtype


def test_a_non_finite_gradient_stops_training_before_the_adapter_changes(
    converted, dataset, cache, tmp_path, monkeypatch
):
    trainer = importlib.import_module("mlx_acestep.training.trainer")

    monkeypatch.setattr(trainer.optim, "clip_grad_norm", lambda g, m: (g, mx.array(float("inf"))))
    with pytest.raises(AceStepError, match="step 1: the gradient norm is inf"):
        train_lora(
            dataset,
            tmp_path / "out",
            TrainConfig(rank=4, steps=1, grad_accum=1, crop_seconds=5),
            model=converted,
            cache_dir=cache,
        )
    assert (
        not (tmp_path / "out" / "adapter_model.safetensors").exists() and not (tmp_path / "out" / "checkpoint").exists()
    )


def test_a_run_refused_before_training_leaves_no_folder(converted, dataset, cache, tmp_path):
    """Found wrong once the model is known (a rank wider than its layers): no output folder to --resume or delete."""
    with pytest.raises(AceStepError, match="more than this model's narrowest adapted layer"):
        train_lora(dataset, tmp_path / "out", TrainConfig(rank=100_000, steps=1), model=converted, cache_dir=cache)
    assert not (tmp_path / "out").exists()


def test_folders_the_trainer_did_not_write_are_refused(converted, dataset, cache, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(AceStepError, match="this trainer did not write it"):
        train_lora(dataset, mine, TrainConfig(steps=1), model=converted, cache_dir=cache)
    with pytest.raises(AceStepError, match="nothing to resume"):
        train_lora(dataset, mine, TrainConfig(steps=1), model=converted, cache_dir=cache, resume=True)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


# -- the dataset ---------------------------------------------------------------------------------------------


def test_dataset_metadata_and_sidecars(tmp_path):
    write_song(tmp_path / "a.wav", 5.5, 200)
    write_song(tmp_path / "b.flac", 6, 300, caption="from the sidecar", lyrics="[chorus]\nhey")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file": "a.wav", "caption": "from metadata", "bpm": "96", "key": "C major"}) + "\n"
    )
    a, b = scan_dataset(tmp_path)
    assert (a.caption, a.bpm, a.key, a.lyrics) == ("from metadata", 96, "C major", "[Instrumental]")
    assert (b.caption, b.lyrics) == ("from the sidecar", "[chorus]\nhey")


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: write_song(d / "short.wav", 3, 200, "x"), "clips must be at least 5 s"),
        (lambda d: write_song(d / "mute.wav", 6, 200), "no caption"),
        (lambda d: (d / "bad.wav").write_bytes(b"not audio"), "not a readable audio file"),
        (lambda d: (d / "notes.txt").write_text("x"), "no audio files"),
        (
            lambda d: (
                write_song(d / "s.wav", 6, 200, "x"),
                (d / "metadata.csv").write_text("file,time_signature\ns.wav,13\n"),
            ),
            r"s.wav: time_signature must be one of .+ got '13' \(from the dataset's metadata\)",
        ),
        (
            lambda d: (
                write_song(d / "s.wav", 6, 200, "x"),
                (d / "metadata.csv").write_text("file,key\ns.wav,H major\n"),
            ),
            r"s.wav: unknown key 'H major'",
        ),
    ],
)
def test_bad_datasets_are_one_line_errors(tmp_path, make, needle):
    make(tmp_path)
    with pytest.raises(AceStepError, match=needle) as e:
        scan_dataset(tmp_path)
    assert "\n" not in str(e.value)


# -- the command line ----------------------------------------------------------------------------------------


def cli(args, cwd, cache):
    return run_cli(args, cwd, env={"MLX_ACESTEP_CACHE": str(cache)})


def test_train_then_generate_with_the_adapter_from_the_cli(converted, dataset, cache, tmp_path):
    done = cli(
        [
            "train",
            str(dataset),
            "-o",
            "style",
            "--model",
            str(converted),
            "--steps",
            "3",
            "--grad-accum",
            "1",
            "--rank",
            "4",
            "--crop-seconds",
            "5",
            "--warmup",
            "1",
            "--preview-every",
            "3",
        ],
        tmp_path,
        cache,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote style" in done.stdout and (tmp_path / "style" / "adapter_config.json").is_file()
    assert sf.info(str(tmp_path / "style" / "previews" / "step-3.wav")).duration == pytest.approx(10, abs=0.05)
    again = cli(
        [
            "train",
            str(dataset),
            "-o",
            "style",
            "--model",
            str(converted),
            "--steps",
            "5",
            "--grad-accum",
            "1",
            "--rank",
            "4",
            "--crop-seconds",
            "5",
            "--resume",
        ],
        tmp_path,
        cache,
    )
    assert again.returncode == 0, again.stderr
    assert len((tmp_path / "style" / "train_log.jsonl").read_text().splitlines()) == 5
    gen = cli(
        ["generate", "a sine", "--model", str(converted), "--duration", "10", "--lora", "style", "-o", "s.wav"],
        tmp_path,
        cache,
    )
    assert gen.returncode == 0, gen.stderr
    bad = cli(["train", str(tmp_path / "nowhere"), "-o", "x", "--model", str(converted)], tmp_path, cache)
    assert_one_line_error(bad, "not a folder")


@pytest.mark.parametrize("phase, save_every", [("train", 0), ("save", 2)])
def test_a_run_asked_to_stop_saves_the_step_it_finished_and_resumes_from_it(
    converted, dataset, cache, tmp_path, phase, save_every
):
    """The first Ctrl-C of `mlx-acestep train` sets `stop`: the run ends after that step with one checkpoint of it
    (none was due at --save-every 0; asked while the due one was written, no second step nor second save), and
    --resume continues from there to the end."""
    stop, saves = threading.Event(), []

    def callback(progress):
        saves.extend([progress.step] if progress.phase == "save" else [])
        if progress.phase == phase and progress.step == 2:
            stop.set()

    config = TrainConfig(rank=4, steps=4, grad_accum=1, crop_seconds=5, save_every=save_every)
    with pytest.raises(TrainingStopped) as caught:
        train_lora(dataset, tmp_path / "out", config, model=converted, cache_dir=cache, callback=callback, stop=stop)
    assert str(caught.value) == (
        "stopped after step 2 as asked; the last checkpoint (step 2) is kept: --resume continues from it"
    )
    assert saves == [2]
    assert json.loads((tmp_path / "out" / "train_state.json").read_text())["step"] == 2
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()  # the final adapter is the end's
    train_lora(dataset, tmp_path / "out", config, model=converted, cache_dir=cache, resume=True)
    log = [json.loads(line)["step"] for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]
