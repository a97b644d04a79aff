"""The pipeline's adapter methods: LoRA / LoKr on the DiT decoder, loaded once or given for one call.

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

from ..adapters import Adapter, AdapterStack, check_scale
from ..adapters.stack import Entry
from ..adapters.stack import targets as adapter_targets
from ..models.dit.decoder import AceStepDiTModel


class AdapterMethods:
    """Mixed into `ACEStep` (which provides `config`, `residency` and `_worker`)."""

    adapters: AdapterStack

    def _decoder_targets(self) -> dict[str, tuple[int, int]]:
        # The shapes come from the config: a skeleton decoder (lazy arrays, never evaluated) has them all.
        # Called on the pipeline's thread only (see read_call_adapters).
        if not hasattr(self, "_targets"):
            self._targets = adapter_targets(AceStepDiTModel(self.config))
        return self._targets

    def load_lora(self, path: str | Path, scale: float = 1.0, name: str | None = None, fuse: bool = False) -> Adapter:
        """Read an adapter and apply it from the next call on; returns it (`adapter.summary()` says what it holds)."""
        adapter = self._worker.run(lambda: self.adapters.add(path, self._decoder_targets(), scale, name, fuse))
        self._sync_adapters()
        return adapter

    def set_lora_scale(self, name: str, scale: float) -> None:
        scale = check_scale(scale)

        def change():  # on the pipeline's thread, between generations: never under a running one
            self.adapters.entry(name).scale = scale

        self._sync_adapters(change)

    def unload_lora(self, name: str | None = None) -> None:
        """Take one adapter (or, with no name, every one) off; the decoder is the base model again."""

        def remove():
            for n in [name] if name is not None else list(self.adapters.entries):
                self.adapters.entry(n)
                del self.adapters.entries[n]

        self._sync_adapters(remove)

    def loras(self) -> list[tuple[str, float]]:
        """The loaded adapters and their scales, in load order."""
        return [(n, e.scale) for n, e in self.adapters.entries.items()]

    def read_call_adapters(self, loras: Sequence[tuple[str | Path, float]]) -> list[Entry]:
        """The adapters of one `generate(..., loras=...)` call, read and checked before any work starts."""
        from ..adapters import read_adapter

        def read():  # on the pipeline's thread: building arrays needs MLX's streams, which are per thread
            return [
                Entry(
                    read_adapter(path, self._decoder_targets(), name=f"call-{i}:{Path(path).name}"), check_scale(scale)
                )
                for i, (path, scale) in enumerate(loras)
            ]

        return self._worker.run(read) if loras else []

    def _sync_adapters(self, change=None) -> None:
        """Make `change` to the stack (if any) and bring a resident decoder in line with it now, both on the
        pipeline's thread, so an app's other threads never change the stack under a generation (a fused change
        drops the decoder: it reloads clean)."""

        def sync():
            if change is not None:
                change()
            self._drop_stale_fused()
            dit = self.residency.loaded("denoiser")
            if dit is not None:
                self.adapters.apply(dit.decoder)

        self._worker.run(sync)

    def _drop_stale_fused(self) -> None:
        """Before the DiT phase: a decoder holding merged adapters that changed is dropped (it reloads clean)."""
        dit = self.residency.loaded("denoiser")
        if dit is not None and self.adapters.needs_fresh_weights(dit.decoder):
            self.residency.evict("denoiser")
