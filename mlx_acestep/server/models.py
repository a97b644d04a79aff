"""The DiTs a server runs: the one it started with (the default) and the others of the same model source, loaded on
demand when a task names one (`model`) or needs one (the base-only tasks take the base DiT, as `generate` does:
cli/generate.py picks `--dit` or the task's `required_dit`). One is resident at a time unless the machine's
memory holds more: before a job runs, the others free their modules (they load again when a job needs them).

Upstream keeps up to three DiTs loaded from start-up and serves an unknown `model` with its primary one, silently
(`acestep/api/job_model_selection.py:53-62`); here an unknown name is refused, naming what is served.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import AceStepError, MissingDiT
from ..names import BASE_DIT, BASE_ONLY, LM_PREFIX, LM_SIZES, TASKS
from .protocol import ProtocolError

ID_PREFIX = "acestep/"  # OpenRouter ids name a DiT as acestep/NAME
RESIDENT_SHARE = 0.5  # of what the device allows a run: the weights kept resident, the rest for activations


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
        return list(self._pipes)

    def dits(self) -> list[str]:
        """Every DiT this server knows it can run: the loaded ones and those its source holds on this machine."""
        return sorted(set(self._pipes) | set(_local(self.source, "dit") or ()))

    def lms(self) -> list[str]:
        lm = self.pipe.folders.lm
        return sorted(set(_local(self.source, "lm") or ()) | ({lm.name} if lm else set()))

    def pick(self, asked, task: str):
        """The pipeline for a task: the DiT it names, else the base DiT for a base-only task when the default is not
        a base model and the source may have one, else the default."""
        if asked is not None and str(asked).strip():
            return self.get(str(asked).strip().removeprefix(ID_PREFIX), asked)
        if task in BASE_ONLY and self.pipe.family != "base" and self._may_have(BASE_DIT):
            return self.get(BASE_DIT)
        return self.pipe

    def get(self, name: str, asked=None):
        """The pipeline of DiT `name`, built on first use (no weights load until a job runs on it)."""
        with self._lock:
            if name in self._pipes:
                return self._pipes[name]
            if not self._may_have(name):
                raise ProtocolError(
                    f"model {asked or name!r} is not served here: this server runs {', '.join(self.dits())} "
                    f"(ids {', '.join(ID_PREFIX + n for n in self.dits())})"
                )
            try:
                self._pipes[name] = self._load(self.source.replace(dit=name))
            except MissingDiT as e:  # a model from the Hub, whose DiTs are known once asked for
                raise ProtocolError(f"model {asked or name!r} is not served here: {e}") from None
            except AceStepError as e:
                raise ProtocolError(f"model {name!r} could not be loaded: {e}", 503) from None
            return self._pipes[name]

    def _may_have(self, name: str) -> bool:
        listed = _local(self.source, "dit")
        return name in self._pipes or (self.source is not None and (listed is None or name in listed))

    def set_default(self, name: str) -> None:
        self.get(name)
        self.default = name

    def set_planner(self, name: str | None) -> str:
        """Every DiT's pipeline built again around the planner LM `name` (None: the model's own, as `serve` picks
        it), upstream's `init_llm`; the jobs already queued keep the pipelines they were submitted with. Returns
        the planner's name."""
        lm = self.pipe.folders.lm
        if lm is not None and name in (None, lm.name):
            return lm.name
        size = "auto" if name is None else name.removeprefix(LM_PREFIX)
        listed = _local(self.source, "lm")
        if (
            self.source is None
            or size not in ("auto", *LM_SIZES)
            or (name and listed is not None and name not in listed)
        ):
            raise ProtocolError(
                f"lm_model_path {name!r}: this server can run {', '.join(self.lms()) or 'no planner LM'}"
            )
        with self._lock:
            source = self.source.replace(lm=size)
            try:
                pipes = {dit: self._load(source.replace(dit=dit)) for dit in self._pipes}
            except AceStepError as e:
                raise ProtocolError(f"the planner {name or 'LM'!r} could not be loaded: {e}", 503) from None
            if pipes[self.default].folders.lm is None:
                raise ProtocolError(f"{self.source.model} has no planner LM")
            old, self._pipes, self.source = self._pipes, pipes, source
        for pipe in old.values():
            pipe.unload()
        return self.pipe.folders.lm.name

    def activate(self, pipe) -> None:
        """Before a job runs on `pipe`: the other DiTs free their modules, the longest built first, until the
        weights left resident fit in `RESIDENT_SHARE` of what the device allows a run (one resident at a time on
        a machine that cannot hold more)."""
        others = [p for p in list(self._pipes.values()) if p is not pipe and p.resident()]
        need, budget = pipe.weight_bytes() + sum(p.weight_bytes() for p in others), resident_budget(pipe)
        for other in others:
            if need <= budget:
                break
            other.unload()
            need -= other.weight_bytes()

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


def resident_budget(pipe) -> int:
    """Bytes of weights the server keeps resident across its DiTs."""
    return int(pipe.device_memory() * RESIDENT_SHARE)


def _from_source(source):
    from ..pipeline import ACEStep

    return ACEStep.from_pretrained(source=source)


def _root(source) -> Path | None:
    """The source's checkpoint folder when it is on this machine (None: a Hugging Face repo id)."""
    from ..cache import open_cache
    from ..hub import tiny_checkpoint

    if str(source.model) == "tiny":
        return tiny_checkpoint(open_cache(source.cache_dir), lambda message: None)
    path = Path(source.model).expanduser()
    return path if path.is_dir() else None


def _local(source, kind: str) -> list[str] | None:
    """The folder names of one kind of component ("dit", "lm") in the source's checkpoint folder; None for a model
    from the Hub, whose components are known once asked for; [] without a source."""
    from ..convert.converter import find_components
    from ..hub import converted_components

    if source is None:
        return []
    root = _root(source)
    if root is None:
        return None
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
