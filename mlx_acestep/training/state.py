"""A training run's folder: what marks it as this trainer's, its state and checkpoint, and what `--resume` may
change. Every write is atomic: a run killed at any moment resumes from a checkpoint whose parts belong together."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ..errors import AceStepError, first_line
from ..files import out_of_space, write_text
from .config import TrainConfig

STATE_FILE = "train_state.json"  # marks a folder this trainer wrote (and what --resume continues)
CHECKPOINT_STEP = "step.json"  # inside checkpoint/: the step its adapter and optimizer state belong to


def check_output(output: Path, resume: bool) -> None:
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


def save_checkpoint(folder: Path, stack, optimizer, state_path: Path, step: int, config, model, dit: str) -> None:
    """The adapter, the optimizer state and their step, swapped in as one folder: a run killed at any moment
    resumes from a checkpoint whose three parts belong together."""
    from safetensors.numpy import save

    from ..adapters.peft import adapter_tensors
    from ..files import building_dir

    full = False
    try:
        with building_dir(folder, replace=folder.exists()) as tmp:
            try:
                (tmp / "adapter.safetensors").write_bytes(save(adapter_tensors(stack)))
                mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
                (tmp / CHECKPOINT_STEP).write_text(json.dumps({"step": step}))
            except (OSError, RuntimeError) as e:  # judged now: MLX's error has no errno, and the free space it
                full = out_of_space(folder.parent, e)  # lacked comes back once the staging folder is removed
                raise
        write_text(state_path, json.dumps({"step": step, "config": asdict(config), "model": str(model), "dit": dit}))
    except (OSError, RuntimeError) as e:  # a full disk: MLX raises RuntimeError, Python OSError (ENOSPC)
        reason = "no space left on the device" if full or out_of_space(folder.parent, e) else first_line(e)
        raise AceStepError(
            f"{folder}: the checkpoint of step {step} could not be written ({reason}); {resume_hint(folder.parent)}"
        ) from None


def resume_hint(output: Path) -> str:
    """What a stopped run leaves to resume from: the last checkpoint's step, or that there is none yet."""
    from .. import distributed

    if not distributed.is_leader():  # another machine's folder: its checkpoints are rank 0's to say
        return "rank 0 keeps the run's checkpoints"
    step_file = Path(output) / "checkpoint" / CHECKPOINT_STEP
    try:
        step = json.loads(step_file.read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no checkpoint was written yet, so nothing can be resumed (--save-every N writes one every N steps)"
    return f"the last checkpoint (step {step}) is kept: --resume continues from it"


def model_name(model) -> str:
    """The model as recorded: a local folder absolute (so a resume or the model card works from anywhere)."""
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if str(model) != "tiny" and path.exists() else str(model)


def read_state(path: Path) -> dict:
    """train_state.json, checked; the step is the checkpoint's own when it has one (see `_save_checkpoint`)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AceStepError(f"{path}: cannot be read ({first_line(e)}); start again in another folder") from None
    if not (isinstance(state, dict) and is_step(state.get("step")) and isinstance(state.get("config", {}), dict)):
        raise AceStepError(f"{path}: not a training state this trainer wrote; start again in another folder")
    step_file = path.parent / "checkpoint" / CHECKPOINT_STEP
    if step_file.is_file():
        try:
            step = json.loads(step_file.read_text())["step"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AceStepError(f"{step_file}: cannot be read ({first_line(e)}); the checkpoint is damaged") from None
        if not is_step(step):
            raise AceStepError(f"{step_file}: step {step!r} is not a whole number >= 0; the checkpoint is damaged")
        state["step"] = step
    return state


def logged_until(log_path: Path, step: int) -> list[str]:
    """The log's lines up to `step` (a line a kill cut short is dropped)."""
    kept = []
    for line in log_path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    return kept


def is_step(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def restore_swapped_checkpoint(checkpoint: Path) -> None:
    """A run killed between the two renames of a checkpoint swap left the previous one as `.checkpoint.*.old`."""
    if checkpoint.exists():
        return
    old = sorted(checkpoint.parent.glob(f".{checkpoint.name}.*.old"), key=lambda p: p.stat().st_mtime)
    if old and (old[-1] / "adapter.safetensors").is_file():
        old[-1].rename(checkpoint)


# What a resumed run may change: how long it runs, how often it saves and previews, and checkpointing (speed
# against memory: a run that ran out of memory must be able to turn it on).
RESUMED = ("steps", "epochs", "save_every", "preview_every", "checkpointing")


def resumed_config(config: TrainConfig, state: dict, path: Path, model: str, dit: str | None) -> TrainConfig:
    """The saved run's settings; asking for others is an error (they would be silently ignored otherwise)."""
    if state.get("model") is not None and model_name(state["model"]) != model:
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
