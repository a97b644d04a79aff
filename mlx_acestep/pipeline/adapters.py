"""The pipeline's adapters: LoRA / LoKr on the DiT decoder, loaded once or given for one call.

    pipe.load_lora("my-style/", scale=0.8)              # a PEFT folder, a ComfyUI file or a LyCORIS LoKr file
    pipe.set_lora_scale("my-style", 0.5)                # takes effect at the next call, no reload
    pipe.generate("...", loras=[("other.safetensors", 1.0)])  # stacked on top, for this call only
    pipe.unload_lora()                                  # the base model, exactly

Adapters sit beside the base layers (plain or quantized) and are applied in every task, since every task runs
the same decoder. `fuse=True` merges an adapter into the weights instead (a little faster; for a quantized
DiT it re-quantizes the merged weights, which costs fidelity); changing or unloading a fused adapter reloads
the DiT's weights from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..adapters import Adapter, AdapterStack, check_scale, read_adapter
from ..adapters.stack import targets as adapter_targets
from ..models.dit.decoder import AceStepDiTModel

if TYPE_CHECKING:
    from ..models.dit import AceStepConfig
    from .residency import Residency
    from .worker import Worker


class PipelineAdapters:
    """The adapters one pipeline applies to its DiT: every change is made on the pipeline's thread (`worker`),
    between generations, never under a running one."""

    def __init__(self, config: AceStepConfig, residency: Residency, worker: Worker):
        self._config, self._residency, self._worker = config, residency, worker
        self._stack = AdapterStack()
        self._targets: dict[str, tuple[int, int]] | None = None

    def _decoder_targets(self) -> dict[str, tuple[int, int]]:
        # The shapes come from the config: a skeleton decoder (lazy arrays, never evaluated) has them all.
        # Called on the pipeline's thread only.
        if self._targets is None:
            self._targets = adapter_targets(AceStepDiTModel(self._config))
        return self._targets

    def load(self, path: str | Path, scale: float = 1.0, name: str | None = None, fuse: bool = False) -> Adapter:
        """Read an adapter and apply it from the next call on; returns it (`adapter.summary()` says what it holds)."""
        return self._sync(lambda: self._stack.add(path, self._decoder_targets(), scale, name, fuse))

    def set_scale(self, name: str, scale: float) -> None:
        scale = check_scale(scale)
        self._sync(lambda: self._stack.set_scale(name, scale))

    def unload(self, name: str | None = None) -> None:
        """Take one adapter (or, with no name, every one) off; the decoder is the base model again."""
        self._sync(self._stack.clear if name is None else lambda: self._stack.remove(name))

    def loaded(self) -> list[tuple[str, float]]:
        """The loaded adapters and their scales, in load order."""
        return self._stack.loaded()

    def check(self, path: str | Path, name: str | None = None) -> Adapter:
        """Read an adapter and check it fits this model, without loading it (`adapter.summary()` says what it holds)."""
        return self._worker.run(lambda: read_adapter(path, self._decoder_targets(), name))

    def read_call(self, loras: Sequence[tuple[str | Path, float]]) -> list[tuple[Adapter, float]]:
        """The adapters of one `generate(..., loras=...)` call, read and checked before any work starts."""

        def read():  # on the pipeline's thread: building arrays needs MLX's streams, which are per thread
            return [
                (read_adapter(path, self._decoder_targets(), name=f"call-{i}:{Path(path).name}"), check_scale(scale))
                for i, (path, scale) in enumerate(loras)
            ]

        return self._worker.run(read) if loras else []

    def apply(self, decoder, call_adapters: Sequence[tuple[Adapter, float]] = ()) -> None:
        """Make `decoder` carry the loaded adapters and `call_adapters` (on the pipeline's thread)."""
        self._stack.apply(decoder, call_adapters)

    def drop_stale_fused(self) -> None:
        """Before the DiT phase: a decoder holding merged adapters that changed is dropped (it reloads clean)."""
        dit = self._residency.loaded("denoiser")
        if dit is not None and self._stack.needs_fresh_weights(dit.decoder):
            self._residency.evict("denoiser")

    def _sync(self, change):
        """Make `change` to the stack and bring a resident decoder in line with it now, both on the pipeline's
        thread, so an app's other threads never change the stack under a generation (a fused change drops the
        decoder: it reloads clean). Returns what `change` returned."""

        def sync():
            out = change()
            self.drop_stale_fused()
            dit = self._residency.loaded("denoiser")
            if dit is not None:
                self._stack.apply(dit.decoder)
            return out

        return self._worker.run(sync)
