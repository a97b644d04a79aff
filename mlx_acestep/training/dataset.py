"""A training dataset folder: audio files with their captions, lyrics and metadata.

Per file, the first of these that exists gives its text:

* `metadata.jsonl` (one JSON object per line) or `metadata.csv` in the folder, with the columns `file`, `caption`,
  `lyrics`, `bpm`, `key`, `time_signature`, `language` (all but `file` and `caption` may be missing);
* sidecars beside the audio: `song.txt` (the caption) and `song.lyrics.txt` (the lyrics).

Lyrics default to `[Instrumental]`. Any file libsndfile reads counts as audio (wav, flac, ogg, mp3, aiff, ...).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import AceStepError
from ..names import INSTRUMENTAL
from .config import MIN_CLIP_SECONDS

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")
METADATA_FIELDS = ("file", "caption", "lyrics", "bpm", "key", "time_signature", "language")


@dataclass(frozen=True)
class Clip:
    path: Path
    caption: str
    lyrics: str = INSTRUMENTAL
    bpm: int | None = None
    key: str | None = None
    time_signature: str | None = None
    language: str = "unknown"
    seconds: float = 0.0


def _metadata(folder: Path) -> dict[str, dict]:
    """file name -> its row, from metadata.jsonl or metadata.csv (or nothing)."""
    rows: list[dict] = []
    jsonl, table = folder / "metadata.jsonl", folder / "metadata.csv"
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise AceStepError(f"{jsonl}:{n}: not a JSON object ({e.msg})") from None
                if not isinstance(row, dict):
                    raise AceStepError(f"{jsonl}:{n}: not a JSON object")
                rows.append(row)
    elif table.is_file():
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        unknown = set(row) - set(METADATA_FIELDS)
        if unknown:
            raise AceStepError(
                f"{folder}: metadata has unknown columns {sorted(unknown, key=str)} (known: {', '.join(METADATA_FIELDS)})"
            )
        if not row.get("file"):
            raise AceStepError(f"{folder}: a metadata row has no 'file': {row}")
        out[str(row["file"])] = row
    return out


def _optional_int(value, what: str, where: Path) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AceStepError(f"{where}: {what} must be a whole number, got {value!r}") from None


def scan_dataset(folder: str | Path) -> list[Clip]:
    """The folder's clips, checked: each readable, at least 5 s long, with a non-empty caption."""
    import soundfile as sf

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise AceStepError(f"{folder}: not a folder (a dataset is a folder of audio files with captions)")
    rows = _metadata(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise AceStepError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    missing = set(rows) - {p.name for p in files}
    if missing:
        raise AceStepError(f"{folder}: metadata names files that are not there: {sorted(missing)[:3]}")
    clips = []
    for path in files:
        try:
            info = sf.info(str(path))
        except Exception as e:  # libsndfile's error types vary by version
            raise AceStepError(f"{path}: not a readable audio file ({e})") from None
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if seconds < MIN_CLIP_SECONDS:
            raise AceStepError(f"{path}: {seconds:.1f} s long; clips must be at least {MIN_CLIP_SECONDS:g} s")
        row = rows.get(path.name, {})
        caption = row.get("caption")
        if caption is None and path.with_suffix(".txt").is_file():
            caption = path.with_suffix(".txt").read_text(encoding="utf-8")
        if not isinstance(caption, str) or not caption.strip():
            raise AceStepError(f"{path}: no caption (a metadata row, or {path.with_suffix('.txt').name} beside it)")
        lyrics = row.get("lyrics")
        sidecar = path.with_name(path.stem + ".lyrics.txt")
        if not lyrics and sidecar.is_file():
            lyrics = sidecar.read_text(encoding="utf-8")
        clip = Clip(
            path=path,
            caption=caption.strip(),
            lyrics=(lyrics or "").strip() or INSTRUMENTAL,
            bpm=_optional_int(row.get("bpm"), "bpm", path),
            key=row.get("key") or None,
            time_signature=str(row["time_signature"]) if row.get("time_signature") not in (None, "") else None,
            language=row.get("language") or "unknown",
            seconds=seconds,
        )
        _check_metas(clip)
        clips.append(clip)
    return clips


def _check_metas(clip: Clip) -> None:
    """The key and time signature as generation will read them, checked now: named with the clip, not after
    the preprocessing of every clip before it."""
    from ..pipeline.request import RequestError, normalize_key, normalize_time_signature

    for value, check in ((clip.key, normalize_key), (clip.time_signature, normalize_time_signature)):
        try:
            check(value)
        except RequestError as e:
            raise AceStepError(f"{clip.path}: {e} (from the dataset's metadata)") from None
