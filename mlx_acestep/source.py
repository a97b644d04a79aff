"""Which model to load and how: one frozen `ModelSource` that the Python API, training, the server and every command
line verb build (no MLX import here: `--help` reads its fields).

`ACEStep.from_pretrained(source=ModelSource("tiny", lm=None))`, or its keywords `from_pretrained("tiny", lm=None)`;
`hub.resolve_source(source)` gives the converted folders, converting and downloading as needed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .errors import FieldError
from .fields import Field, Fields
from .limits import DTYPE_CHOICES, GROUP_SIZES, QUANTIZE_CHOICES
from .names import DEFAULT_REPO, DIT_SHORT, LM_SIZES

QUANTIZED = tuple(q for q in QUANTIZE_CHOICES if q != "none")

SOURCE = Fields(
    Field("dit", "text", optional=True, help="DiT: turbo, base, sft or a folder inside the model (default: turbo)."),
    Field("dtype", "choice", choices=DTYPE_CHOICES, default="auto", what="dtype"),
    Field("quantize", "choice", choices=(None, *QUANTIZED), what="quantization"),
    Field("q_group_size", "choice", choices=GROUP_SIZES, default=64, what="quantization group size"),
    Field("lm", "choice", choices=(None, "auto", *LM_SIZES), default="auto", what="planner LM"),
    Field("lm_quantize", "choice", choices=(None, *QUANTIZED), what="planner quantization"),
    Field("reconvert", "bool", default=False),
)


@dataclass(frozen=True)
class ModelSource:
    """A model and how to load it.

    `model`: a converted folder, a PyTorch checkpoint root (original or diffusers layout), a Hugging Face repo id or
    "tiny". `dit` picks the DiT folder ("turbo", "base", "sft": the official one of that name; default turbo).
    `dtype` is what a PyTorch checkpoint is converted to ("auto": bfloat16 on a GPU, float32 on MLX's CPU backend).
    `quantize` None, "q8" or "q4" (the DiT's and text encoder's linear layers), in groups of `q_group_size`. `lm`
    picks the planner: "0.6B", "1.7B", "4B", "auto" (the default 1.7B if the model has it, else the one it has, else
    none) or None; `lm_quantize` None, "q8" or "q4". `cache_dir`: the cache (default $MLX_ACESTEP_CACHE or
    ~/.cache/mlx-acestep); `reconvert` converts again what is cached.
    """

    model: str | Path = DEFAULT_REPO
    dit: str | None = None
    dtype: str = "auto"
    quantize: str | None = None
    q_group_size: int = 64
    lm: str | None = "auto"
    lm_quantize: str | None = None
    cache_dir: str | Path | None = None
    reconvert: bool = False

    def __post_init__(self):
        if not isinstance(self.model, (str, Path)):
            raise FieldError("model", f"@name@ must be a folder, a repo id or 'tiny', got {self.model!r}")
        if not (self.cache_dir is None or isinstance(self.cache_dir, (str, Path))):
            raise FieldError("cache_dir", f"@name@ must be a folder, got {self.cache_dir!r}")
        if self.dit in DIT_SHORT:  # --dit base: the official folder of that variant
            object.__setattr__(self, "dit", DIT_SHORT[self.dit])
        for name in ("quantize", "lm_quantize"):  # "none" is how the command line says None
            if getattr(self, name) == "none":
                object.__setattr__(self, name, None)
        SOURCE.check_into(self)

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The keyword names of a source (what `from_pretrained` and `train_lora` take beside it)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes) -> ModelSource:
        return dataclasses.replace(self, **changes)
