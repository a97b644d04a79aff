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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ..errors import AceStepError
from ..files import write_text
from .config import TrainConfig
from .dataset import scan_dataset
from .lora import attach_lora, load_adapter_tensors, peft_config, save_peft_folder, seed_dropout
from .objective import flow_loss, sample_t, text2music_context

STATE_FILE = "train_state.json"  # marks a folder this trainer wrote (and what --resume continues)


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
    return optim.join_schedules([optim.linear_schedule(config.lr / config.warmup, config.lr, config.warmup),
                                 lambda _: config.lr], [config.warmup])


def _pad_states(states: list[mx.array]) -> mx.array:
    """Condition states of a batch, right-padded with zeros to the longest (the DiT attends to all of it)."""
    length = max(s.shape[0] for s in states)
    return mx.stack([mx.pad(s, [(0, length - s.shape[0]), (0, 0)]) for s in states])


def train_lora(
    dataset: str | Path,
    output: str | Path,
    config: TrainConfig | None = None,
    *,
    model: str | Path = "ACE-Step/Ace-Step1.5",
    dit: str | None = None,
    dtype: str = "auto",
    quantize: str | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callable[[TrainProgress], None] | None = None,
) -> Path:
    """Train a LoRA on the songs in `dataset` and write it to `output` (a PEFT folder); returns `output`."""
    from ..loading import load_component
    from ..pipeline import ACEStep
    from .preprocess import preprocess

    config = config or TrainConfig()
    output = Path(output).expanduser()
    clips = scan_dataset(dataset)
    _check_output(output, resume)
    report = callback or (lambda p: None)
    pipe = ACEStep.from_pretrained(model, dit=dit, dtype=dtype, quantize=quantize, lm=None, cache_dir=cache_dir,
                                   keep_loaded=False)
    output.mkdir(parents=True, exist_ok=True)
    state_path = output / STATE_FILE
    state = json.loads(state_path.read_text()) if resume else {"step": 0}
    if resume and state.get("config", {}).get("seed") is not None:
        saved = {k: tuple(v) if k == "targets" else v for k, v in state["config"].items()}
        config = replace(config, **{k: v for k, v in saved.items() if k not in ("steps", "epochs", "save_every", "preview_every")})
    write_text(state_path, json.dumps({"step": state["step"], "config": asdict(config), "model": str(model), "dit": pipe.name}))

    from ..hub import open_cache

    cached = preprocess(pipe, clips, open_cache(cache_dir) / "preprocessed", config.seed,
                        lambda done, n: report(TrainProgress("preprocess", done, n)))
    pipe.unload()  # from here on only the decoder is in memory
    frames = min(int(config.crop_seconds * 25), min(c["target_latents"].shape[0] for c in cached))
    micro_per_epoch = math.ceil(len(cached) / config.batch)
    total = config.steps or math.ceil(config.epochs * micro_per_epoch / config.grad_accum)

    dit_model = load_component(pipe.folders.dit, "dit", parts=("decoder",))
    decoder = dit_model.decoder
    decoder.checkpointing = config.checkpointing
    stack = attach_lora(decoder, config.targets, config.rank, config.alpha, config.dropout, _key(config.seed, 0))
    schedule = _schedule(config)
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    checkpoint = output / "checkpoint"
    if resume and (checkpoint / "adapter.safetensors").is_file():
        load_adapter_tensors(stack, checkpoint / "adapter.safetensors")
        optimizer.init(decoder.trainable_parameters())
        saved = mx.load(str(checkpoint / "optimizer.safetensors"))
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
    if log_path.exists():  # a resumed run keeps the lines up to its checkpoint (later ones are redone)
        kept = [line for line in log_path.read_text().splitlines() if resume and json.loads(line)["step"] <= state["step"]]
        write_text(log_path, "".join(line + "\n" for line in kept))
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
        if config.grad_clip:
            grads, _ = optim.clip_grad_norm(grads, config.grad_clip)
        lr = float(schedule(mx.array(step))) if callable(schedule) else schedule  # what this update uses
        optimizer.update(decoder, grads)
        mx.eval(decoder.trainable_parameters(), optimizer.state)
        loss_value = loss_sum / config.grad_accum
        if not math.isfinite(loss_value):
            raise AceStepError(f"step {step + 1}: the loss is {loss_value} (try a lower --lr); the last checkpoint is kept")
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
    from safetensors.numpy import save

    from ..files import atomic_file
    from .lora import adapter_tensors

    folder.mkdir(exist_ok=True)
    with atomic_file(folder / "adapter.safetensors") as tmp:
        tmp.write_bytes(save(adapter_tensors(stack)))
    with atomic_file(folder / "optimizer.safetensors") as tmp:
        mx.save_safetensors(str(tmp.with_suffix(".safetensors")), dict(tree_flatten(optimizer.state)))
        tmp.with_suffix(".safetensors").rename(tmp)
    # the step is written last: a run killed before this line resumes from the previous checkpoint's step
    write_text(state_path, json.dumps({"step": step, "config": asdict(config), "model": str(model), "dit": dit}))


def _preview(pipe, stack, config, output: Path, step: int, cached, model) -> None:
    """A short render with the adapter as it is now: previews/step-N.wav (its PEFT folder beside it)."""
    folder = output / "previews" / f"step-{step}"
    save_peft_folder(folder, stack, peft_config(config.rank, config.alpha, 0.0, config.targets, str(model)), "preview\n")
    caption = cached[0]["caption"]
    result = pipe.generate(caption, duration=10, seed=config.seed, thinking=False, loras=[(folder, 1.0)])
    result.save(output / "previews" / f"step-{step}.wav", overwrite=True)
    pipe.unload()


def _model_card(config: TrainConfig, model, dit: str, clips, steps: int, log_path: Path) -> str:
    losses = [json.loads(line)["loss"] for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    settings = "\n".join(f"- {k}: {v}" for k, v in asdict(config).items())
    seconds = sum(c.seconds for c in clips)
    loss = f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "n/a"
    return (f"# LoRA for ACE-Step 1.5 ({dit})\n\nTrained with mlx-acestep on {len(clips)} clips "
            f"({seconds / 60:.1f} min of audio), {steps} steps; loss {loss}.\n\nBase model: {model} / {dit}\n\n"
            f"Load it with `mlx-acestep generate ... --lora THIS_FOLDER`, or as a PEFT adapter of the decoder.\n\n"
            f"## Settings\n\n{settings}\n\n## Clips\n\n" + "\n".join(f"- {c.path.name}: {c.caption}" for c in clips) + "\n")

