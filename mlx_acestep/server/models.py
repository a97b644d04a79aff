"""The DiTs a server runs: the one it started with (the default) and the others of the same model source, loaded on
demand when a task names one (`model`) or needs one (the base-only tasks take the base DiT, as `generate` does:
cli/generate.py picks `--dit` or the task's `required_dit`). One is resident at a time: before a job runs, the
others free their modules (they load again when a job needs them).

Upstream keeps up to three DiTs loaded from start-up and serves an unknown `model` with its primary one, silently
(`acestep/api/job_model_selection.py:53-62`); here an unknown name is refused, naming what is served.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from ..names import BASE_DIT, BASE_ONLY, LM_PREFIX, TASKS
from .protocol import ProtocolError

ID_PREFIX = "acestep/"  # OpenRouter ids name a DiT as acestep/NAME


class ServedModels:
    """DiT name -> pipeline; `source` (a `ModelSource`) loads the others, None serves the one pipeline only."""

    def __init__(self, pipe, source=None, load: Callable[[object], object] | None = None):
        self.default = pipe.name
        self.source = source
        self._pipes = {pipe.name: pipe}
        self._load = load or _from_source
        self._lock = threading.Lock()

    @property
    def pipe(self):
        """The default pipeline (what a task naming no model runs)."""
        return self._pipes[self.default]

    def loaded(self) -> list[str]:
        """The DiTs built in this server, in the order they were."""
        with self._lock:
            return list(self._pipes)

    def dits(self) -> list[str]:
        """Every DiT this server can run: the loaded ones and those its source holds."""
        return sorted(set(self._pipes) | set(_local(self.source, "dit")))

    def lms(self) -> list[str]:
        lm = self.pipe.folders.lm
        return sorted(set(_local(self.source, "lm")) | ({lm.name} if lm else set()))

    def pick(self, asked, task: str):
        """The pipeline for a task: the DiT it names, else the base DiT for a base-only task when the default is not
        a base model and the source has one, else the default."""
        if asked is not None and str(asked).strip():
            return self.get(str(asked).strip().removeprefix(ID_PREFIX), asked)
        if task in BASE_ONLY and self.pipe.family != "base" and BASE_DIT in self.dits():
            return self.get(BASE_DIT)
        return self.pipe

    def get(self, name: str, asked=None):
        """The pipeline of DiT `name`, built on first use (no weights load until a job runs on it)."""
        from ..errors import AceStepError

        with self._lock:
            if name in self._pipes:
                return self._pipes[name]
            if self.source is None or name not in self.dits():
                served = ", ".join(self.dits())
                raise ProtocolError(
                    f"model {asked or name!r} is not served here: this server runs {served} "
                    f"(ids {', '.join(ID_PREFIX + n for n in self.dits())})"
                )
            try:
                self._pipes[name] = self._load(self.source.replace(dit=name))
            except AceStepError as e:
                raise ProtocolError(f"model {name!r} could not be loaded: {e}", 503) from None
            return self._pipes[name]

    def set_default(self, name: str) -> None:
        self.get(name)
        self.default = name

    def activate(self, pipe) -> None:
        """Before a job runs on `pipe`: the other DiTs free their modules, so one is resident at a time."""
        with self._lock:
            others = [p for p in self._pipes.values() if p is not pipe]
        for other in others:
            if other.resident():
                other.unload()

    def supported(self, name: str) -> list[str]:
        """The tasks a DiT runs here: every one on a base model, the others on turbo and SFT (the pipeline refuses
        the base-only tasks there; upstream lists them for SFT, `model_service_routes.py:33-46`)."""
        family = self._pipes[name].family if name in self._pipes else _family(self.source, name)
        return list(TASKS) if family == "base" else [t for t in TASKS if t not in BASE_ONLY]

    def inventory(self) -> dict:
        """`GET /v1/model_inventory` as upstream answers it (`api/http/model_service_routes.py:49-125`)."""
        lm = self.pipe.folders.lm
        return {
            "models": [
                {
                    "name": name,
                    "is_default": name == self.default,
                    "is_loaded": name in self._pipes,
                    "supported_task_types": self.supported(name),
                }
                for name in self.dits()
            ],
            "default_model": self.default,
            "lm_models": [{"name": name, "is_loaded": lm is not None and name == lm.name} for name in self.lms()],
            "loaded_lm_model": lm.name if lm else None,
            "llm_initialized": lm is not None,
        }


def _from_source(source):
    from ..pipeline import ACEStep

    return ACEStep.from_pretrained(source=source)


def _root(source) -> Path | None:
    """The source's checkpoint folder when it is on this machine (a repo id: only what is loaded is listed)."""
    if source is None:
        return None
    from ..cache import open_cache
    from ..hub import tiny_checkpoint

    if str(source.model) == "tiny":
        return tiny_checkpoint(open_cache(source.cache_dir), lambda message: None)
    path = Path(source.model).expanduser()
    return path if path.is_dir() else None


def _local(source, kind: str) -> list[str]:
    """The folder names of one kind of component ("dit", "lm") in the source's checkpoint folder."""
    from ..convert.converter import find_components
    from ..hub import converted_components

    root = _root(source)
    if root is None:
        return []
    converted = converted_components(root)
    if converted:
        return [folder.name for folder in converted.get(kind, [])]
    names = [name for spec, _, name in find_components(root) if spec.kind == kind]
    return [n for n in names if kind != "lm" or n.startswith(LM_PREFIX)]


def _family(source, name: str) -> str:
    """A DiT's family from its config, without loading it."""
    from ..models.dit import AceStepConfig
    from ..models.dit.config import model_family

    config = _root(source) / name / "config.json"
    return model_family(AceStepConfig.from_dict(json.loads(config.read_text()), str(config)), name)
