"""Where each component lives in a checkpoint root, per layout.

A layout is a table of (folder pattern, component kind). The original
ACE-Step 1.5 root (Hugging Face `ACE-Step/Ace-Step1.5`) is one table. The
diffusers pipeline layout (`transformer/`, `condition_encoder/`, `vae/`,
`text_encoder/`, ... with a `model_index.json`) is the other, its key renames
in `diffusers_layout.py` (spec DIFFUSERS-MAPPING §1): one converter, two
tables. Both write the same output folders (`vae/`, `Qwen3-Embedding-0.6B/`,
`acestep-v15-<variant>/`), since the loaders find components by those names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import diffusers_layout as diffusers


@dataclass(frozen=True)
class SourceFolder:
    pattern: str  # glob relative to the checkpoint root
    kind: str  # "vae", "dit", "text_encoder", "lm"
    output: Callable[[Path], str] | None = None  # the output folder's name; default: the source folder's
    convert: Callable[..., str] | None = None  # this layout's converter; default: the kind's
    # Other paths under the root the converter reads for this component: with the folder, what the hub's cache key
    # hashes, so a component's cache entry changes exactly when something it was made from does.
    reads: tuple[str, ...] = ()

    def output_name(self, folder: Path) -> str:
        return self.output(folder) if self.output else folder.name


@dataclass(frozen=True)
class Layout:
    name: str
    folders: tuple[SourceFolder, ...]
    marker: str | None = None  # a file at the root that identifies the layout

    def find(self, root: Path) -> list[tuple[SourceFolder, Path]]:
        if self.marker and not (root / self.marker).is_file():
            return []
        found = []
        for spec in self.folders:
            for path in sorted(root.glob(spec.pattern)):
                if path.is_dir():
                    found.append((spec, path))
        return found


ORIGINAL = Layout(
    "original",
    (
        SourceFolder("vae", "vae"),
        SourceFolder("acestep-v15-*", "dit"),
        SourceFolder("Qwen3-Embedding-*", "text_encoder"),
        SourceFolder("acestep-5Hz-lm-*", "lm"),
    ),
)

DIFFUSERS = Layout(
    "diffusers",
    (
        SourceFolder("vae", "vae"),  # the same folder in both layouts
        SourceFolder(
            "transformer", "dit", diffusers.dit_folder_name, diffusers.convert_diffusers_dit, reads=diffusers.DIT_READS
        ),
        SourceFolder(
            "text_encoder",
            "text_encoder",
            diffusers.text_encoder_folder_name,
            diffusers.convert_diffusers_text_encoder,
            reads=(diffusers.TOKENIZER_DIR,),
        ),
    ),
    marker="model_index.json",
)

# The diffusers table first: its root also holds a `vae/`, which the original table would match alone.
LAYOUTS = (DIFFUSERS, ORIGINAL)

# Markers of a single component folder passed directly as SRC.
_SINGLE_FOLDER_MARKERS = {
    "AutoencoderOobleck": "vae",
}


def classify_single_folder(folder: Path, config: dict) -> SourceFolder | None:
    kind = _SINGLE_FOLDER_MARKERS.get(config.get("_class_name", ""))
    if kind is None and config.get("model_type") == "acestep":  # an acestep-v15-* DiT folder
        kind = "dit"
    if kind is None and "Qwen3ForCausalLM" in config.get("architectures", []):  # a planner LM (its own repo)
        kind = "lm"
    return SourceFolder(folder.name, kind) if kind else None
