"""The trainer's settings (no MLX import here: the command line reads its defaults for --help)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import AceStepError
from ..limits import SECONDS, SEED_MAX

MIN_CLIP_SECONDS = 5.0
ATTENTION_KINDS = ("self", "cross")


@dataclass
class TrainConfig:
    """The trainer's settings; the defaults are the reference trainer's (UI) ones."""

    rank: int = 64
    alpha: float = 128.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("self", "cross")
    steps: int | None = None  # optimisation steps; None: `epochs` passes over the dataset
    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    grad_accum: int = 4
    batch: int = 1
    crop_seconds: float = 30.0
    seed: int = 42
    save_every: int = 0  # 0: only at the end
    preview_every: int = 0  # 0: no previews
    checkpointing: bool = True  # recompute decoder layers in the backward pass

    def __post_init__(self):
        self.targets = tuple(self.targets)
        checks = [
            (self.rank >= 1, f"rank must be at least 1, got {self.rank}"),
            (math.isfinite(self.alpha) and self.alpha > 0, f"alpha must be positive, got {self.alpha}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (
                bool(self.targets) and set(self.targets) <= set(ATTENTION_KINDS),
                f"targets must be self and/or cross, got {self.targets}",
            ),
            (self.steps is None or self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be positive, got {self.lr}"),
            (
                self.weight_decay >= 0 and self.warmup >= 0 and self.grad_clip >= 0,
                "weight decay, warmup and clip must be >= 0",
            ),
            (self.grad_accum >= 1 and self.batch >= 1, "grad_accum and batch must be at least 1"),
            (
                math.isfinite(self.crop_seconds) and MIN_CLIP_SECONDS <= self.crop_seconds <= SECONDS[1],
                f"crop_seconds must be between {MIN_CLIP_SECONDS:g} and {SECONDS[1]:g}, got {self.crop_seconds}",
            ),
            (
                isinstance(self.seed, int) and 0 <= self.seed <= SEED_MAX,
                f"seed must be between 0 and 2**63 - 1, got {self.seed}",
            ),
            (self.save_every >= 0 and self.preview_every >= 0, "save_every and preview_every must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise AceStepError(message)
