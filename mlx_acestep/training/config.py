"""The trainer's settings (no MLX import here: the command line reads its defaults and help for --help)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FieldError
from ..fields import Field, Fields
from ..limits import SECONDS, SEED_MAX

MIN_CLIP_SECONDS = 5.0
ATTENTION_KINDS = ("self", "cross")

# Each setting's rule, default and help, once; the defaults are the reference trainer's (UI) ones.
TRAIN = Fields(
    Field("rank", "integer", 1, default=64, help="LoRA rank r."),
    Field("alpha", "number", 0, low_open=True, default=128.0, help="LoRA alpha (scale alpha / r)."),
    Field("dropout", "number", 0, 1, high_open=True, default=0.1, help="Dropout on the adapter's input."),
    Field("steps", "integer", 1, optional=True, help="Optimisation steps (default: --epochs passes over the dataset)."),
    Field("epochs", "integer", 1, default=10, help="Passes over the dataset (without --steps)."),
    Field("lr", "number", 0, low_open=True, default=1e-4, help="AdamW learning rate (weight decay 0.01)."),
    Field("weight_decay", "number", 0, default=0.01),
    Field("warmup", "integer", 0, default=100, help="Linear warm-up steps."),
    Field("grad_clip", "number", 0, default=1.0),
    Field("grad_accum", "integer", 1, default=4, help="Micro-batches per step."),
    Field("batch", "integer", 1, default=1, help="Clips per micro-batch."),
    Field(
        "crop_seconds",
        "number",
        MIN_CLIP_SECONDS,
        SECONDS[1],
        default=30.0,
        unit="seconds",
        help="Each micro-batch takes a random crop this long from each clip (a new one every time).",
    ),
    Field("seed", "integer", 0, SEED_MAX, default=42, help="Seeds the adapter's init, crops, noise, times."),
    Field(
        "save_every", "integer", 0, default=0, help="Write a resumable checkpoint every N steps (default: at the end)."
    ),
    Field("preview_every", "integer", 0, default=0, help="Render a 10 s preview with the adapter every N steps."),
    Field("checkpointing", "bool", default=True),
)


@dataclass
class TrainConfig:
    """The trainer's settings; rules, defaults and help: `TRAIN`."""

    rank: int = TRAIN.default("rank")
    alpha: float = TRAIN.default("alpha")
    dropout: float = TRAIN.default("dropout")
    targets: tuple[str, ...] = ATTENTION_KINDS
    steps: int | None = None  # optimisation steps; None: `epochs` passes over the dataset
    epochs: int = TRAIN.default("epochs")
    lr: float = TRAIN.default("lr")
    weight_decay: float = TRAIN.default("weight_decay")
    warmup: int = TRAIN.default("warmup")
    grad_clip: float = TRAIN.default("grad_clip")
    grad_accum: int = TRAIN.default("grad_accum")
    batch: int = TRAIN.default("batch")
    crop_seconds: float = TRAIN.default("crop_seconds")
    seed: int = TRAIN.default("seed")
    save_every: int = TRAIN.default("save_every")  # 0: only at the end
    preview_every: int = TRAIN.default("preview_every")  # 0: no previews
    checkpointing: bool = TRAIN.default("checkpointing")  # recompute decoder layers in the backward pass

    def __post_init__(self):
        TRAIN.check_into(self)
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        if not targets or not set(targets) <= set(ATTENTION_KINDS):
            raise FieldError("targets", f"@name@ must be self and/or cross, got {targets}")
        self.targets = targets
