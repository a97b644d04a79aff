"""`train_lora`: a LoRA on the DiT decoder from a folder of songs, natively in MLX.

1. Preprocess each clip once (`preprocess.py`): VAE latents and the condition, cached in the model cache
   (`preprocessed/`, shared by every run on the same clips, text, model and seed).
   After that only the decoder is in memory: the text encoder, condition encoder and VAE are freed.
2. Train: the base frozen (any dtype, or q8/q4: QLoRA), the adapter and AdamW's state in float32, decoder
   layers recomputed in the backward pass (`mx.checkpoint`) to bound activation memory. One optimisation step is
   `grad_accum` micro-batches; each micro-batch takes a random crop of `crop_seconds` from each of its clips (a
   new crop every time a clip comes round). All randomness is derived from (seed, step), so a resumed run
   continues exactly as an uninterrupted one.
3. Save a PEFT folder (`lora.py`) that `--lora` loads, a model card, `train_log.jsonl`, and a resumable
   `checkpoint/` every `save_every` steps and at the end.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ..errors import AceStepError, first_line
from ..files import remove_stale, write_text
from ..source import ModelSource
from .config import TrainConfig
from .dataset import scan_dataset
from .lora import attach_lora, load_adapter_tensors, peft_config, save_peft_folder, seed_dropout
from .objective import flow_loss, sample_t, text2music_context

STATE_FILE = "train_state.json"  # marks a folder this trainer wrote (and what --resume continues)
CHECKPOINT_STEP = "step.json"  # inside checkpoint/: the step its adapter and optimizer state belong to


@dataclass
class TrainProgress:
    """What `callback` receives: a phase ("preprocess", "train", "preview", "save") and where it stands."""

    phase: str
    step: int
    total: int
    loss: float | None = None
    lr: float | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _key(seed: int, *parts: int) -> mx.array:
    """A key from (seed, step, micro-batch, ...): the same numbers whenever that step runs."""
    value = seed
    for p in parts:
        value = (value * 1_000_003 + p) % (2**63)
    return mx.random.key(value)


def _check_output(output: Path, resume: bool) -> None:
    if not output.exists():
        return
    if not output.is_dir():
        raise AceStepError(f"{output}: exists and is not a folder")
    ours = (output / STATE_FILE).is_file()
    if resume and not ours:
        raise AceStepError(f"{output}: nothing to resume (no {STATE_FILE}: this trainer did not write it)")
    if not resume and any(output.iterdir()):
        hint = "give --resume to continue it" if ours else "this trainer did not write it; choose another folder"
        raise AceStepError(f"{output}: exists and is not empty ({hint})")


def _schedule(config: TrainConfig):
    if not config.warmup:
        return config.lr
    return optim.join_schedules(
        [optim.linear_schedule(config.lr / config.warmup, config.lr, config.warmup), lambda _: config.lr],
        [config.warmup],
    )


def _pad_states(states: list[mx.array]) -> mx.array:
    """Condition states of a batch, right-padded with zeros to the longest (the DiT attends to all of it)."""
    length = max(s.shape[0] for s in states)
    return mx.stack([mx.pad(s, [(0, length - s.shape[0]), (0, 0)]) for s in states])


def train_lora(
    dataset: str | Path,
    output: str | Path,
    config: TrainConfig | None = None,
    *,
    source: ModelSource | None = None,
    model: str | Path = "ACE-Step/Ace-Step1.5",
    dit: str | None = None,
    dtype: str = "auto",
    quantize: str | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callable[[TrainProgress], None] | None = None,
) -> Path:
    """Train a LoRA on the songs in `dataset` and write it to `output` (a PEFT folder); returns `output`. The base
    model is `source` (a `ModelSource`: its planner is never loaded), or its fields `model`, `dit`, `dtype`,
    `quantize`, `cache_dir` as keywords."""
    if source is not None:
        model, dit, dtype, quantize, cache_dir = (
            source.model,
            source.dit,
            source.dtype,
            source.quantize,
            source.cache_dir,
        )
    from ..loading import load_component
    from ..pipeline import ACEStep
    from .preprocess import preprocess

    config = config or TrainConfig()
    output = Path(output).expanduser()
    clips = scan_dataset(dataset)
    _check_output(output, resume)
    report = callback or (lambda p: None)
    model = _model_name(model)
    state_path = output / STATE_FILE
    if resume:
        _restore_swapped_checkpoint(output / "checkpoint")
        remove_stale(output)  # what runs killed while writing left (after the restore: it removes `.old` folders)
    state = _read_state(state_path) if resume else {"step": 0}
    if resume:
        config = _resumed_config(config, state, state_path, model, dit)
        if dit is not None and state.get("dit") not in (None, dit):
            raise AceStepError(
                f"{output}: trained on the DiT {state['dit']}, not {dit}; resume with --dit {state['dit']}"
            )
        dit = dit or state.get("dit")  # the run's own DiT, found before anything loads
    micro_per_epoch = math.ceil(len(clips) / config.batch)
    total = config.steps or math.ceil(config.epochs * micro_per_epoch / config.grad_accum)
    if resume and state["step"] >= total and (output / "adapter_model.safetensors").is_file():
        raise AceStepError(f"{output}: already trained {state['step']} steps (of {total}); give more --steps to go on")
    checkpoint = output / "checkpoint"
    if resume and state["step"] and not (checkpoint / "adapter.safetensors").is_file():
        raise AceStepError(
            f"{output}: train_state.json says step {state['step']} but {checkpoint} holds no adapter "
            "(deleted?); nothing to resume from: start again in another folder"
        )
    base = (source or ModelSource()).replace(model=model, dit=dit, dtype=dtype, quantize=quantize, cache_dir=cache_dir)
    pipe = ACEStep.from_pretrained(source=base.replace(lm=None), keep_loaded=False)
    if resume and state.get("dit") not in (None, pipe.name):
        raise AceStepError(
            f"{output}: trained on the DiT {state['dit']}, not {pipe.name}; resume with --dit {state['dit']}"
        )
    widest = min(pipe.config.hidden_size, pipe.config.num_key_value_heads * pipe.config.head_dim)
    if config.rank > widest:
        raise AceStepError(
            f"rank {config.rank} is more than this model's narrowest adapted layer ({widest} wide); "
            f"choose at most {widest}"
        )

    from ..hub import open_cache

    cached = preprocess(
        pipe,
        clips,
        open_cache(cache_dir) / "preprocessed",
        config.seed,
        lambda done, n: report(TrainProgress("preprocess", done, n)),
    )
    pipe.unload()  # from here on only the decoder is in memory
    frames = min(int(config.crop_seconds * 25), min(c["target_latents"].shape[0] for c in cached))
    # Only now, with the data and the model known good, does the output folder appear: a run refused earlier
    # leaves nothing behind that a second run would have to --resume or delete.
    output.mkdir(parents=True, exist_ok=True)
    write_text(
        state_path, json.dumps({"step": state["step"], "config": asdict(config), "model": str(model), "dit": pipe.name})
    )

    dit_model = load_component(pipe.folders.dit, "dit", parts=("decoder",))
    decoder = dit_model.decoder
    decoder.checkpointing = config.checkpointing
    stack = attach_lora(decoder, config.targets, config.rank, config.alpha, config.dropout, _key(config.seed, 0))
    schedule = _schedule(config)
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    if resume and (checkpoint / "adapter.safetensors").is_file():
        load_adapter_tensors(stack, checkpoint / "adapter.safetensors")
        optimizer.init(decoder.trainable_parameters())
        try:
            saved = mx.load(str(checkpoint / "optimizer.safetensors"))
        except (OSError, RuntimeError, ValueError) as e:
            raise AceStepError(
                f"{checkpoint / 'optimizer.safetensors'}: cannot be read ({first_line(e)}); the "
                "checkpoint is damaged: start again in another folder"
            ) from None
        optimizer.state = tree_unflatten(list(saved.items()))
    silence = pipe.silence_latent
    dtype_model = dit_model.dtype

    def loss_of(x0, noise, t, context, states):
        return flow_loss(decoder, x0, noise, t, context, states)

    value_and_grad = nn.value_and_grad(decoder, loss_of)
    order_cache: dict[int, np.ndarray] = {}

    def micro_batch(step: int, j: int):
        index = step * config.grad_accum + j  # the micro-batch's place in the whole run
        epoch, within = divmod(index, micro_per_epoch)
        if epoch not in order_cache:
            order_cache.clear()
            order_cache[epoch] = np.random.default_rng([config.seed, epoch]).permutation(len(cached))
        rows = [order_cache[epoch][(within * config.batch + b) % len(cached)] for b in range(config.batch)]
        rng = np.random.default_rng([config.seed, step, j])
        x0 = []
        for r in rows:
            latents = cached[r]["target_latents"]
            start = int(rng.integers(0, latents.shape[0] - frames + 1))
            x0.append(latents[start : start + frames])
        x0 = mx.stack(x0).astype(dtype_model)
        states = _pad_states([cached[r]["encoder_hidden_states"] for r in rows]).astype(dtype_model)
        key_t, key_noise = mx.random.split(_key(config.seed, step, j, 1))
        t = sample_t(pipe.family, len(rows), key_t)
        noise = mx.random.normal(x0.shape, key=key_noise).astype(dtype_model)
        context = text2music_context(silence, frames, len(rows), dtype_model)
        return x0, noise, t, context, states

    log_path = output / "train_log.jsonl"
    if resume and log_path.exists():  # a resumed run keeps the lines up to its checkpoint (later ones are redone)
        write_text(log_path, "".join(line + "\n" for line in _logged_until(log_path, state["step"])))
    start_step, started = state["step"], time.perf_counter()
    for step in range(start_step, total):
        t0 = time.perf_counter()
        grads, loss_sum = None, 0.0
        for j in range(config.grad_accum):
            seed_dropout(stack, int(np.random.default_rng([config.seed, step, j, 2]).integers(2**63)))
            loss, g = value_and_grad(*micro_batch(step, j))
            grads = g if grads is None else tree_map(mx.add, grads, g)
            mx.eval(loss, grads)
            loss_sum += loss.item()
        grads = tree_map(lambda g: g / config.grad_accum, grads)
        loss_value = loss_sum / config.grad_accum
        clipped, norm = optim.clip_grad_norm(grads, config.grad_clip or math.inf)
        norm = norm.item()
        if not math.isfinite(loss_value) or not math.isfinite(norm):  # before the update: the adapter stays finite
            what = f"the loss is {loss_value}" if not math.isfinite(loss_value) else f"the gradient norm is {norm}"
            raise AceStepError(f"step {step + 1}: {what} (try a lower --lr); the last checkpoint is kept")
        if config.grad_clip:
            grads = clipped
        lr = float(schedule(mx.array(step))) if callable(schedule) else schedule  # what this update uses
        optimizer.update(decoder, grads)
        mx.eval(decoder.trainable_parameters(), optimizer.state)
        seconds = time.perf_counter() - t0
        with open(log_path, "a") as f:
            f.write(json.dumps({"step": step + 1, "loss": loss_value, "lr": lr, "seconds": round(seconds, 4)}) + "\n")
        report(TrainProgress("train", step + 1, total, loss_value, lr, time.perf_counter() - started))
        last = step + 1 == total
        if last or (config.save_every and (step + 1) % config.save_every == 0):
            _save_checkpoint(checkpoint, stack, optimizer, state_path, step + 1, config, model, pipe.name)
            report(TrainProgress("save", step + 1, total))
        if config.preview_every and ((step + 1) % config.preview_every == 0 or last):
            _preview(pipe, stack, config, output, step + 1, cached, model)
            report(TrainProgress("preview", step + 1, total))
    final = peft_config(config.rank, config.alpha, config.dropout, config.targets, f"{model}/{pipe.name}")
    save_peft_folder(output, stack, final, _model_card(config, model, pipe.name, clips, total, log_path))
    return output


def _save_checkpoint(folder: Path, stack, optimizer, state_path: Path, step: int, config, model, dit: str) -> None:
    """The adapter, the optimizer state and their step, swapped in as one folder: a run killed at any moment
    resumes from a checkpoint whose three parts belong together."""
    from safetensors.numpy import save

    from ..files import building_dir
    from .lora import adapter_tensors

    with building_dir(folder, replace=folder.exists()) as tmp:
        (tmp / "adapter.safetensors").write_bytes(save(adapter_tensors(stack)))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        (tmp / CHECKPOINT_STEP).write_text(json.dumps({"step": step}))
    write_text(state_path, json.dumps({"step": step, "config": asdict(config), "model": str(model), "dit": dit}))


def _model_name(model) -> str:
    """The model as recorded: a local folder absolute (so a resume or the model card works from anywhere)."""
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if str(model) != "tiny" and path.exists() else str(model)


def _read_state(path: Path) -> dict:
    """train_state.json, checked; the step is the checkpoint's own when it has one (see `_save_checkpoint`)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AceStepError(f"{path}: cannot be read ({first_line(e)}); start again in another folder") from None
    if not (isinstance(state, dict) and _is_step(state.get("step")) and isinstance(state.get("config", {}), dict)):
        raise AceStepError(f"{path}: not a training state this trainer wrote; start again in another folder")
    step_file = path.parent / "checkpoint" / CHECKPOINT_STEP
    if step_file.is_file():
        try:
            step = json.loads(step_file.read_text())["step"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AceStepError(f"{step_file}: cannot be read ({first_line(e)}); the checkpoint is damaged") from None
        if not _is_step(step):
            raise AceStepError(f"{step_file}: step {step!r} is not a whole number >= 0; the checkpoint is damaged")
        state["step"] = step
    return state


def _logged_until(log_path: Path, step: int) -> list[str]:
    """The log's lines up to `step` (a line a kill cut short is dropped)."""
    kept = []
    for line in log_path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    return kept


def _is_step(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _restore_swapped_checkpoint(checkpoint: Path) -> None:
    """A run killed between the two renames of a checkpoint swap left the previous one as `.checkpoint.*.old`."""
    if checkpoint.exists():
        return
    old = sorted(checkpoint.parent.glob(f".{checkpoint.name}.*.old"), key=lambda p: p.stat().st_mtime)
    if old and (old[-1] / "adapter.safetensors").is_file():
        old[-1].rename(checkpoint)


# What a resumed run may change: how long it runs, how often it saves and previews, and checkpointing (speed
# against memory: a run that ran out of memory must be able to turn it on).
RESUMED = ("steps", "epochs", "save_every", "preview_every", "checkpointing")


def _resumed_config(config: TrainConfig, state: dict, path: Path, model: str, dit: str | None) -> TrainConfig:
    """The saved run's settings; asking for others is an error (they would be silently ignored otherwise)."""
    if state.get("model") is not None and _model_name(state["model"]) != model:
        raise AceStepError(
            f"{path.parent}: trained on --model {state['model']}, not {model}; resume with the same model"
        )
    saved = state.get("config") or {}
    if saved.get("seed") is None:
        return config
    try:
        kept = TrainConfig(**{k: tuple(v) if k == "targets" else v for k, v in saved.items()})
    except (TypeError, AceStepError) as e:
        raise AceStepError(f"{path}: its settings cannot be read ({e}); start again in another folder") from None
    defaults = TrainConfig()
    asked = [
        f
        for f in asdict(config)
        if f not in RESUMED and getattr(config, f) != getattr(kept, f) and getattr(config, f) != getattr(defaults, f)
    ]
    if asked:
        was = ", ".join(f"{f} {getattr(kept, f)} (asked {getattr(config, f)})" for f in asked)
        raise AceStepError(
            f"{path.parent}: --resume continues the run as it was started: {was}; only the steps, epochs, "
            "save and preview intervals can change"
        )
    return replace(kept, **{f: getattr(config, f) for f in RESUMED})


def _preview(pipe, stack, config, output: Path, step: int, cached, model) -> None:
    """A short render with the adapter as it is now: previews/step-N.wav (its PEFT folder beside it)."""
    folder = output / "previews" / f"step-{step}"
    save_peft_folder(
        folder, stack, peft_config(config.rank, config.alpha, 0.0, config.targets, str(model)), "preview\n"
    )
    caption = cached[0]["caption"]
    result = pipe.generate(caption, duration=10, seed=config.seed, thinking=False, loras=[(folder, 1.0)])
    result.save(output / "previews" / f"step-{step}.wav", overwrite=True)
    pipe.unload()


def _model_card(config: TrainConfig, model, dit: str, clips, steps: int, log_path: Path) -> str:
    losses = [json.loads(line)["loss"] for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    settings = "\n".join(f"- {k}: {v}" for k, v in asdict(config).items())
    seconds = sum(c.seconds for c in clips)
    loss = f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "n/a"
    return (
        f"# LoRA for ACE-Step 1.5 ({dit})\n\nTrained with mlx-acestep on {len(clips)} clips "
        f"({seconds / 60:.1f} min of audio), {steps} steps; loss {loss}.\n\nBase model: {model} / {dit}\n\n"
        f"Load it with `mlx-acestep generate ... --lora THIS_FOLDER`, or as a PEFT adapter of the decoder.\n\n"
        f"## Settings\n\n{settings}\n\n## Clips\n\n" + "\n".join(f"- {c.path.name}: {c.caption}" for c in clips) + "\n"
    )
