"""Writing a `generate_stream` to files without ever holding a whole song (the CLI's `--stream`).

Each window goes to disk as it is decoded: appended to a hidden raw float32 file beside its output (a
`files.scratch_file`), the item's peak tracked on the way. Peak limiting and the -1 dBFS normalisation need
that peak, so once the run has ended each WAV/FLAC is encoded from its raw file block by block through
`audio.finish_blocks` into its hidden temporary (`files.atomic_file`): the same bits as `generate` then
`save`. Only when every file is complete are they renamed into place; a failure anywhere (the run, a full
disk) leaves nothing under any final name and no raw file behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .audio import check_output, finish_blocks, sound_file
from .errors import AceStepError
from .files import atomic_file, remove_stale, scratch_file

BLOCK = 1 << 18  # samples encoded at a time (2 MB of stereo float32)


def save_stream(
    stream,
    paths: list[Path],
    subtype: str | None = None,
    overwrite: bool = False,
    tags: Callable[[object], list[dict]] | None = None,
) -> list[Path]:
    """Write `stream`'s items to `paths` (one per item); `tags(result)` gives each file's tags once the run has
    ended (the sidecar's figures are known then). Returns the paths; `stream.result` holds the run's result.
    The stream is closed however this ends (a run still going is cancelled)."""
    try:
        return _save(stream, [check_output(p, overwrite) for p in paths], subtype, overwrite, tags)
    finally:
        stream.close()


def _save(stream, paths, subtype, overwrite, tags) -> list[Path]:
    info = stream.info
    if len(paths) != len(info.seeds):
        raise AceStepError(f"{len(paths)} paths for {len(info.seeds)} items")
    for folder in {p.parent for p in paths}:
        remove_stale(folder)  # what a killed earlier run left half-written
    with contextlib.ExitStack() as stack:
        raws = [stack.enter_context(scratch_file(p)) for p in paths]
        peaks, channels = _spill(stream, raws)
        if any(len(peaks[i]) == 0 for i in range(len(paths))):
            raise AceStepError("the stream ended before every item was decoded")
        item_tags = tags(stream.result) if tags else [None] * len(paths)
        temps = [stack.enter_context(atomic_file(p, overwrite)) for p in paths]
        for raw, tmp, path, peak, tag in zip(raws, temps, paths, peaks, item_tags):
            audio = np.memmap(raw, np.float32, "r", shape=(info.samples, channels))
            finish = finish_blocks(max(peak), stream.info.request.normalize)
            with sound_file(tmp, path, info.sample_rate, channels, subtype, tag) as f:
                for i in range(0, info.samples, BLOCK):
                    f.write(finish(np.asarray(audio[i : i + BLOCK])))
            del audio
    return paths


def _spill(stream, raws: list[Path]) -> tuple[list[list[np.float32]], int]:
    """Append each chunk to its item's raw file (they come in order); each item's window peaks, the channels."""
    peaks: list[list[np.float32]] = [[] for _ in raws]
    files, channels = {}, 0
    try:
        for item, _, audio in stream:
            if item not in files:
                files[item] = open(raws[item], "wb")  # noqa: SIM115 (closed below, whichever way it ends)
            files[item].write(np.ascontiguousarray(audio, np.float32).tobytes())
            peaks[item].append(np.max(np.abs(audio)))
            channels = audio.shape[1]
    finally:
        for f in files.values():
            f.close()
    return peaks, channels
