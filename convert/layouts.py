"""Where each component lives in a checkpoint root, per layout.

A layout is a table of (folder pattern, component kind). The original
ACE-Step 1.5 root (Hugging Face `ACE-Step/Ace-Step1.5`) is the first table.
The diffusers pipeline layout (`transformer/`, `condition_encoder/`, `vae/`,
`text_encoder/`, ... with a `model_index.json`) is meant to become a second
table here, with its own key-rename rules in the per-kind remap modules
(spec DIFFUSERS-MAPPING §1): one converter, two tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceFolder:
    pattern: str  # glob relative to the checkpoint root
    kind: str  # "vae", "dit", "text_encoder", "lm"


@dataclass(frozen=True)
class Layout:
    name: str
    folders: tuple[SourceFolder, ...]

    def find(self, root: Path) -> list[tuple[SourceFolder, Path]]:
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

LAYOUTS = (ORIGINAL,)

# Markers of a single component folder passed directly as SRC.
_SINGLE_FOLDER_MARKERS = {
    "AutoencoderOobleck": "vae",
}


def classify_single_folder(folder: Path, config: dict) -> SourceFolder | None:
    kind = _SINGLE_FOLDER_MARKERS.get(config.get("_class_name", ""))
    if kind is None and config.get("model_type") == "acestep":  # an acestep-v15-* DiT folder
        kind = "dit"
    return SourceFolder(folder.name, kind) if kind else None
