"""A training dataset folder: audio files with their captions, lyrics and metadata.

Per file, the first of these that exists gives its text:

* `metadata.jsonl` (one JSON object per line) or `metadata.csv` in the folder, with the columns `file`, `caption`,
  `lyrics`, `bpm`, `key`, `time_signature`, `language` (all but `file` and `caption` may be missing);
* sidecars beside the audio: `song.txt` (the caption) and `song.lyrics.txt` (the lyrics).

Lyrics default to `[Instrumental]`. Any file libsndfile reads counts as audio (wav, flac, ogg, mp3, aiff, ...).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import AceStepError
from ..limits import SOURCE_SECONDS
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


def read_text(path: Path, what: str = "text", newline: str | None = None) -> str:
    """A text file of the dataset as UTF-8, or one line naming the file and where it is not (`newline` as `open`'s:
    "" keeps line endings as written, which the csv reader needs)."""
    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise AceStepError(f"{path}: {what} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise AceStepError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def _metadata(folder: Path) -> dict[str, dict]:
    """file name -> its row, from metadata.jsonl or metadata.csv (or nothing); each row's values checked."""
    rows: list[tuple[str, dict]] = []
    jsonl, table = folder / "metadata.jsonl", folder / "metadata.csv"
    if jsonl.is_file():
        for n, line in enumerate(read_text(jsonl, "metadata").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise AceStepError(f"{jsonl}:{n}: not a JSON object ({e.msg})") from None
                except RecursionError:  # nested deeper than the parser goes
                    raise AceStepError(f"{jsonl}:{n}: not a JSON object (nested too deep)") from None
                if not isinstance(row, dict):
                    raise AceStepError(f"{jsonl}:{n}: not a JSON object")
                rows.append((f"{jsonl}:{n}", row))
    elif table.is_file():
        text = read_text(table, "metadata", newline="")  # one read: its encoding checked, with its name
        rows = [(f"{table}:{n}", row) for n, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), 2)]
    out = {}
    for where, row in rows:
        unknown = set(row) - set(METADATA_FIELDS)
        if unknown:
            raise AceStepError(
                f"{where}: unknown columns {sorted(str(u) for u in unknown)} (known: {', '.join(METADATA_FIELDS)})"
            )
        _check_row(where, row)
        if not row.get("file"):
            raise AceStepError(f"{where}: the row has no 'file'")
        out[str(row["file"])] = row
    return out


def _check_row(where: str, row: dict) -> None:
    """Text where text belongs (a caption 123 is not "no caption"; a lyrics list is not a traceback later)."""
    for name in ("file", "caption", "lyrics", "key", "language"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise AceStepError(f"{where}: '{name}' must be text, got {row[name]!r}")
    for name in ("bpm", "time_signature"):
        value = row.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            raise AceStepError(f"{where}: '{name}' must be a number, got {value!r}")


def _optional_int(value, what: str, where: Path) -> int | None:
    if value in (None, ""):
        return None
    try:
        whole = int(value)
        if isinstance(value, float) and value != whole:  # 1.5 BPM is not 1
            raise ValueError
        return whole
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(Infinity), which JSON rows can hold
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
        if seconds > SOURCE_SECONDS[1]:  # found here, with its name, not after the models load
            raise AceStepError(f"{path}: {seconds:.0f} s long; clips must be at most {SOURCE_SECONDS[1]:g} s")
        row = rows.get(path.name, {})
        caption = row.get("caption")
        if caption is None and path.with_suffix(".txt").is_file():
            caption = read_text(path.with_suffix(".txt"), "the caption")
        if not isinstance(caption, str) or not caption.strip():
            raise AceStepError(f"{path}: no caption (a metadata row, or {path.with_suffix('.txt').name} beside it)")
        lyrics = row.get("lyrics")
        sidecar = path.with_name(path.stem + ".lyrics.txt")
        if not lyrics and sidecar.is_file():
            lyrics = read_text(sidecar, "the lyrics")
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
