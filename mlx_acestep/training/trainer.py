"""`train_lora`: a LoRA on the DiT decoder from a folder of songs, natively in MLX.

1. Preprocess each clip once (`preprocess.py`, through the engine generation runs): VAE latents and the
   condition, cached in the model cache (`preprocessed/`, shared by every run on the same clips, text, model and
   seed). After that only the decoder is in memory.
2. Train: the base frozen (any dtype, or q8/q4: QLoRA), the adapter and AdamW's state in float32, decoder
   layers recomputed in the backward pass (`mx.checkpoint`) to bound activation memory. One optimisation step is
   `grad_accum` micro-batches; each micro-batch takes a random crop of `crop_seconds` from each of its clips (a
   new crop every time a clip comes round). All randomness is derived from (seed, step), so a resumed run
   continues exactly as an uninterrupted one.
3. Save a PEFT folder (`adapters/peft.py`'s layout) that `--lora` loads, a model card, `train_log.jsonl`, and a
   resumable `checkpoint/` every `save_every` steps and at the end; previews render with the decoder in memory.
4. Under `mlx.launch` the ranks share the preprocessing and each step's micro-batches (`parallel.py`); rank 0
   alone checks and writes the run's folder and reports.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_unflatten

from .. import distributed
from ..adapters.peft import load_adapter_tensors, peft_config, save_peft_folder
from ..diffusion.flow import training_times
from ..errors import AceStepError, first_line
from ..files import remove_stale, write_text
from ..source import ModelSource
from . import parallel
from .config import TrainConfig
from .dataset import scan_dataset
from .lora import attach_lora, seed_dropout
from .state import (
    STATE_FILE,
    check_output,
    logged_until,
    model_name,
    read_state,
    restore_swapped_checkpoint,
    resume_hint,
    resumed_config,
    save_checkpoint,
)
from .step import TrainStep


class TrainingStopped(AceStepError):
    """The run stopped as asked (`train_lora`'s `stop`), after a step, with a checkpoint of that step saved."""

    def __init__(self, step: int, hint: str):
        super().__init__(f"stopped after step {step} as asked; {hint}")
        self.step = step


@dataclass
class TrainProgress:
    """What `callback` receives: a phase ("preprocess", "setup", "train", "preview", "save") and where it stands;
    "setup" comes once before the first step, `extra["batch"]` saying what a step averages over."""

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


@dataclass
class Run:
    """One run's settings, folder, model and data, as `train_lora` prepares them."""

    config: TrainConfig
    output: Path
    model: str
    checkpoint: object  # mlx_acestep.checkpoint.Checkpoint
    clips: list
    cached: list[dict]
    state: dict
    total: int
    frames: int

    @property
    def state_path(self) -> Path:
        return self.output / STATE_FILE

    def record(self, step: int) -> None:
        save = {"step": step, "config": asdict(self.config), "model": str(self.model), "dit": self.checkpoint.name}
        write_text(self.state_path, json.dumps(save))


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
    stop: threading.Event | None = None,
) -> Path:
    """Train a LoRA on the songs in `dataset` and write it to `output` (a PEFT folder); returns `output`. The base
    model is `source` (a `ModelSource`: its planner is never loaded), or its fields `model`, `dit`, `dtype`,
    `quantize`, `cache_dir` as keywords. `stop`: once set, the run ends after the step under way, saves a
    checkpoint of it and raises `TrainingStopped` (`--resume` continues it); on one machine only (the ranks of a
    distributed run would not stop at the same step)."""
    report = callback if callback is not None and distributed.is_leader() else (lambda p: None)  # rank 0 reports
    stop = stop if distributed.size() == 1 else None
    if source is None:
        source = ModelSource(model, dit, dtype, quantize, cache_dir=cache_dir)
    run = _prepare(dataset, output, config or TrainConfig(), source.replace(lm=None), resume, report)
    dit_model = run.checkpoint.load("denoiser")  # the decoder, and the null condition its previews guide against
    decoder = dit_model.decoder
    decoder.checkpointing = run.config.checkpointing
    stack, optimizer, schedule = _adapter_and_optimizer(run, decoder, resume)
    try:
        with distributed.stop_on_sigterm("training"):
            _train(run, dit_model, stack, optimizer, schedule, report, stop)
    except distributed.RankLost as e:
        raise AceStepError(f"{e}; {resume_hint(run.output)}") from None
    if not distributed.is_leader():
        return run.output
    config = run.config
    final = peft_config(config.rank, config.alpha, config.dropout, config.targets, f"{run.model}/{run.checkpoint.name}")
    card = _model_card(config, run.model, run.checkpoint.name, run.clips, run.total, run.output / "train_log.jsonl")
    save_peft_folder(run.output, stack, final, card)
    return run.output


def _prepare(dataset, output, config, source: ModelSource, resume, report) -> Run:
    """Everything checked and preprocessed; the output folder appears only now, with the data and the model known
    good: a run refused earlier leaves nothing behind that a second run would have to --resume or delete. Across
    ranks the run's folder is rank 0's: it alone reads and checks it (`on_leader`), every rank gets its verdict."""
    from ..cache import open_cache
    from ..checkpoint import Checkpoint
    from ..hub import resolve_source
    from .preprocess import preprocess

    output = Path(output).expanduser()
    clips = scan_dataset(dataset)
    model, dit = model_name(source.model), source.dit
    state = distributed.on_leader(lambda: _run_state(output, resume))
    if resume:
        config = resumed_config(config, state, output / STATE_FILE, model, dit)
        if dit is not None and state.get("dit") not in (None, dit):
            raise AceStepError(
                f"{output}: trained on the DiT {state['dit']}, not {dit}; resume with --dit {state['dit']}"
            )
        dit = dit or state.get("dit")  # the run's own DiT, found before anything loads
    parallel.check_world(config, distributed.size())
    total = config.steps or math.ceil(config.epochs * math.ceil(len(clips) / config.batch) / config.grad_accum)
    distributed.on_leader(lambda: _check_resumable(output, state, total, resume))
    checkpoint = Checkpoint(distributed.leader_first(lambda: resolve_source(source.replace(dit=dit))))
    if resume and state.get("dit") not in (None, checkpoint.name):
        raise AceStepError(
            f"{output}: trained on the DiT {state['dit']}, not {checkpoint.name}; resume with --dit {state['dit']}"
        )
    widest = min(checkpoint.config.hidden_size, checkpoint.config.num_key_value_heads * checkpoint.config.head_dim)
    if config.rank > widest:
        raise AceStepError(
            f"rank {config.rank} is more than this model's narrowest adapted layer ({widest} wide); "
            f"choose at most {widest}"
        )
    progress = lambda done, n: report(TrainProgress("preprocess", done, n))  # noqa: E731
    cached = preprocess(checkpoint, clips, open_cache(source.cache_dir) / "preprocessed", config.seed, progress)
    frames = min(int(config.crop_seconds * 25), min(c["target_latents"].shape[0] for c in cached))
    run = Run(config, output, model, checkpoint, clips, cached, state, total, frames)
    if distributed.is_leader():
        output.mkdir(parents=True, exist_ok=True)
        run.record(state["step"])
    return run


def _run_state(output: Path, resume: bool) -> dict:
    """The run folder checked (and a killed run's leftovers put right); its state, step 0 for a new run."""
    check_output(output, resume)
    if not resume:
        return {"step": 0}
    restore_swapped_checkpoint(output / "checkpoint")
    remove_stale(output)  # what runs killed while writing left (after the restore: it removes `.old` folders)
    return read_state(output / STATE_FILE)


def _check_resumable(output: Path, state: dict, total: int, resume: bool) -> None:
    if resume and state["step"] >= total and (output / "adapter_model.safetensors").is_file():
        raise AceStepError(f"{output}: already trained {state['step']} steps (of {total}); give more --steps to go on")
    checkpoint = output / "checkpoint"
    if resume and state["step"] and not (checkpoint / "adapter.safetensors").is_file():
        raise AceStepError(
            f"{output}: train_state.json says step {state['step']} but {checkpoint} holds no adapter "
            "(deleted?); nothing to resume from: start again in another folder"
        )


def _adapter_and_optimizer(run: Run, decoder, resume: bool):
    config = run.config
    stack = attach_lora(decoder, config.targets, config.rank, config.alpha, config.dropout, _key(config.seed, 0))
    schedule = _schedule(config)
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    if resume and distributed.on_leader(lambda: _load_checkpoint(run.output / "checkpoint", stack, optimizer, decoder)):
        if not distributed.is_leader():
            optimizer.init(decoder.trainable_parameters())  # the same structure, to take rank 0's values
        decoder.update(distributed.tree_from_leader(decoder.trainable_parameters()))
        optimizer.state = distributed.tree_from_leader(optimizer.state)
    return stack, optimizer, schedule


def _load_checkpoint(checkpoint: Path, stack, optimizer, decoder) -> bool:
    """The adapter and optimizer state of a resumed run, if it saved a checkpoint; whether it had one."""
    if not (checkpoint / "adapter.safetensors").is_file():
        return False
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
    return True


class MicroBatches:
    """Micro-batch j of step `step`: which clips (a fresh permutation each epoch), their crops, times and noise,
    all drawn from (seed, step, j), so a resumed run sees exactly what an uninterrupted one would."""

    def __init__(self, run: Run, dit_model):
        self.run, self.config, self.dtype = run, run.config, dit_model.dtype
        self.per_epoch = math.ceil(len(run.cached) / run.config.batch)
        self.order: dict[int, np.ndarray] = {}
        engine, batch = run.checkpoint.engine(), run.config.batch
        self.context = engine.text2music_context(dit_model, run.frames, batch, self.dtype)  # the same every step

    def __call__(self, step: int, j: int):
        config, cached, frames = self.config, self.run.cached, self.run.frames
        epoch, within = divmod(step * config.grad_accum + j, self.per_epoch)
        if epoch not in self.order:
            self.order = {epoch: np.random.default_rng([config.seed, epoch]).permutation(len(cached))}
        rows = [self.order[epoch][(within * config.batch + b) % len(cached)] for b in range(config.batch)]
        rng = np.random.default_rng([config.seed, step, j])
        x0 = []
        for r in rows:
            latents = cached[r]["target_latents"]
            start = int(rng.integers(0, latents.shape[0] - frames + 1))
            x0.append(latents[start : start + frames])
        x0 = mx.stack(x0).astype(self.dtype)
        states = _pad_states([cached[r]["encoder_hidden_states"] for r in rows]).astype(self.dtype)
        key_t, key_noise = mx.random.split(_key(config.seed, step, j, 1))
        t = training_times(self.run.checkpoint.family, len(rows), key_t)
        noise = mx.random.normal(x0.shape, key=key_noise).astype(self.dtype)
        return x0, noise, t, self.context[: len(rows)], states


def _train(run: Run, dit_model, stack, optimizer, schedule, report, stop=None) -> None:
    config, output, decoder = run.config, run.output, dit_model.decoder
    step_fn = TrainStep(decoder, optimizer, config)
    micro_batch = MicroBatches(run, dit_model)
    log_path = output / "train_log.jsonl"
    leader = distributed.is_leader()  # it alone writes the log and the checkpoints
    if leader and log_path.exists():  # a resumed run keeps the lines up to its checkpoint (none if it had none)
        write_text(log_path, "".join(line + "\n" for line in logged_until(log_path, run.state["step"])))
    report(TrainProgress("setup", run.state["step"], run.total, extra={"batch": parallel.effective_batch(config)}))
    started = time.perf_counter()
    for step in range(run.state["step"], run.total):
        t0 = time.perf_counter()

        def batches():
            for j in parallel.my_micro_batches(config):
                seed_dropout(stack, int(np.random.default_rng([config.seed, step, j, 2]).integers(2**63)))
                yield micro_batch(step, j)

        loss, grads = step_fn.gradients(batches())
        grads, loss_sum = parallel.combine(grads, loss.item(), step, run.output)
        loss_value = step_fn.update(step, grads, loss_sum)
        lr = float(schedule(mx.array(step))) if callable(schedule) else schedule
        if leader:
            with open(log_path, "a") as f:
                seconds = round(time.perf_counter() - t0, 4)
                f.write(json.dumps({"step": step + 1, "loss": loss_value, "lr": lr, "seconds": seconds}) + "\n")
        report(TrainProgress("train", step + 1, run.total, loss_value, lr, time.perf_counter() - started))
        asked = lambda: stop is not None and stop.is_set() and step + 1 < run.total  # noqa: E731
        saved = leader and _after_step(run, step + 1, dit_model, stack, optimizer, report, save=asked())
        if asked():  # asked before this step ended, or while its checkpoint or preview was written
            if leader and not saved:
                _save(run, step + 1, stack, optimizer, report)
            raise TrainingStopped(step + 1, resume_hint(run.output))


def _after_step(run: Run, step: int, dit_model, stack, optimizer, report, save: bool = False) -> bool:
    """The checkpoint (due, or asked for by `save`) and the preview due after `step`; whether it saved."""
    from .preview import render_preview

    config, last = run.config, step == run.total
    saving = save or last or bool(config.save_every and step % config.save_every == 0)
    if saving:
        _save(run, step, stack, optimizer, report)
    if config.preview_every and (step % config.preview_every == 0 or last):
        path = run.output / "previews" / f"step-{step}.wav"
        render_preview(run.checkpoint, dit_model, run.cached[0]["caption"], config.seed, path)
        report(TrainProgress("preview", step, run.total))
    return saving


def _save(run: Run, step: int, stack, optimizer, report) -> None:
    save_checkpoint(
        run.output / "checkpoint", stack, optimizer, run.state_path, step, run.config, run.model, run.checkpoint.name
    )
    report(TrainProgress("save", step, run.total))


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
