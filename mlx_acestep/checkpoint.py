"""One converted checkpoint as the engine's callers see it: its folders, the DiT's config and family, the prompt
tokenizer, the silence latent, and the parts each engine step loads (`engine.PARTS`). Generation (`ACEStep`) and
training open it the same way."""

from __future__ import annotations

import mlx.core as mx

from .conditioning.prompts import PromptTokenizer
from .engine import PARTS, Engine
from .hub import ModelFolders
from .loading import load_component, load_silence_latent, read_json
from .models.dit import AceStepConfig
from .models.dit.config import model_family
from .quantization import recorded_mode


class Checkpoint:
    def __init__(self, folders: ModelFolders, name: str | None = None):
        self.folders = folders
        self.name = name or folders.dit.name
        fields = read_json(folders.dit / "config.json")
        self.config = AceStepConfig.from_dict(fields, str(folders.dit / "config.json"))
        self.dtype = getattr(mx, fields.get("dtype", "float32"))
        self.quantize = recorded_mode(fields.get("quantization"))  # what runs, whatever the command line asked
        self.family = model_family(self.config, self.name)
        self.tokenizer = PromptTokenizer(folders.text_encoder)
        self.silence_latent = load_silence_latent(folders.dit)

    def engine(self) -> Engine:
        return Engine(self.silence_latent)

    def load(self, step: str, whole: bool = False):
        """The modules an engine step needs (`whole`: the whole component, as a pipeline that keeps it loaded)."""
        component, parts = PARTS[step]
        return load_component(getattr(self.folders, component), component, None if whole else parts)
