"""Convert a checkpoint root into one self-describing MLX folder per component.

DST/<component>/ holds `config.json` (layout version, component, dtype,
quantization block and the model's own fields), `model.safetensors` in MLX
layout and `manifest.json` (sha256 of every source file used). The whole of
DST is written in a temporary folder beside it and renamed at the end, so a
failure or an interrupt leaves nothing half-written.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import AceStepError
from ..files import building_dir
from ..loading import read_json
from ..names import CONVERSION_FILE
from .component import ConvertOptions
from .dit import convert_dit
from .kinds import convert_lm, convert_text_encoder, convert_vae
from .layouts import LAYOUTS, SourceFolder, classify_single_folder


@dataclass
class ConvertReport:
    converted: list[tuple[str, str]] = field(default_factory=list)  # (component folder, summary)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source folder, reason)


# kind -> converter; kinds without one are reported as skipped.
CONVERTERS: dict[str, Callable[[Path, Path, ConvertOptions, Path], str]] = {
    "vae": convert_vae,
    "text_encoder": convert_text_encoder,
    "dit": convert_dit,
    "lm": convert_lm,
}


def find_components(src: Path) -> list[tuple[SourceFolder, Path, str]]:
    """(spec, source folder, output folder name) of every component under `src`."""
    for layout in LAYOUTS:
        found = layout.find(src)
        if found:
            return [(spec, folder, spec.output_name(folder)) for spec, folder in found]
    if (src / "config.json").is_file():  # a single component folder passed directly
        spec = classify_single_folder(src, read_json(src / "config.json"))
        if spec is not None:
            return [(spec, src, spec.kind)]
    return []


IGNORABLE = {".DS_Store"}


def written_by_converter(folder: Path) -> bool:
    """Whether `folder` is a conversion output (its marker, or only component folders with our manifests)."""
    if (folder / CONVERSION_FILE).is_file():
        return True
    entries = [p for p in folder.iterdir() if p.name not in IGNORABLE]
    if not entries:
        return False
    for entry in entries:
        try:
            manifest = read_json(entry / "manifest.json") if entry.is_dir() else {}
        except AceStepError:
            return False
        if not str(manifest.get("converter", "")).startswith("mlx-acestep"):
            return False
    return True


def check_destination(src: Path, dst: Path, force: bool) -> None:
    """DST never overlaps SRC, and `force` replaces only a folder this converter wrote."""
    s, d = src.resolve(), dst.resolve()
    if d == s or s.is_relative_to(d) or d.is_relative_to(s):
        relation = "is" if d == s else "contains" if s.is_relative_to(d) else "lies inside"
        raise AceStepError(
            f"{dst}: the output folder {relation} the checkpoint folder {src}; choose a folder outside it"
        )
    if not dst.exists() and not dst.is_symlink():
        return
    if not dst.is_dir() or dst.is_symlink():
        raise AceStepError(f"{dst}: exists and is not a folder")
    if not force:
        raise AceStepError(f"{dst}: already exists (pass --force to replace a folder this converter wrote)")
    if not written_by_converter(dst):
        raise AceStepError(
            f"{dst}: holds files the converter did not write; --force only replaces a previous conversion "
            "(choose another folder, or empty this one yourself)"
        )


def convert_checkpoints(
    src: str | Path,
    dst: str | Path,
    opts: ConvertOptions | None = None,
    log: Callable[[str], None] | None = None,
    only: Sequence[str] | None = None,
) -> ConvertReport:
    """Convert every supported component under `src` into `dst` (atomically).

    `only` names the components to convert by output folder (e.g. `["vae", "acestep-v15-turbo"]`, the same
    names from either layout) or by source folder; the rest are skipped silently, so a pipeline converts
    just what it will load.
    """
    opts = opts or ConvertOptions()
    opts.validate()
    log = log or (lambda msg: None)
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise AceStepError(f"{src}: checkpoint folder not found")
    check_destination(src, dst, opts.force)
    found = find_components(src)
    if not found:
        raise AceStepError(
            f"{src}: no ACE-Step 1.5 checkpoint folders found (expected vae/, acestep-v15-*/, Qwen3-Embedding-*/, "
            "acestep-5Hz-lm-*/, or a diffusers pipeline folder with model_index.json)"
        )

    if only is not None:
        names = {n for _, folder, name in found for n in (name, folder.name)}
        missing = [n for n in only if n not in names]
        if missing:
            outputs = sorted(name for _, _, name in found)
            raise AceStepError(f"{src}: no component folder(s) {', '.join(missing)} (found: {', '.join(outputs)})")
        found = [(spec, folder, name) for spec, folder, name in found if {name, folder.name} & set(only)]

    report = ConvertReport()
    try:
        with building_dir(dst, replace=opts.force) as tmp:
            for spec, folder, name in found:
                converter = spec.convert or CONVERTERS.get(spec.kind)
                if converter is None:
                    report.skipped.append((name, "unsupported component"))
                    log(f"skipped {name}: {report.skipped[-1][1]}")
                    continue
                log(f"converting {name} ...")
                start = time.perf_counter()
                summary = converter(folder, tmp / name, opts, src)
                report.converted.append((name, summary))
                log(f"converted {name}: {summary} in {time.perf_counter() - start:.1f} s")
            if not report.converted:
                raise AceStepError(
                    f"{src}: nothing to convert (" + "; ".join(f"{n}: {r}" for n, r in report.skipped) + ")"
                )
            (tmp / CONVERSION_FILE).write_text(
                json.dumps(
                    {
                        "converter": f"mlx-acestep {__version__}",
                        "source": str(src.resolve()),
                        "components": [name for name, _ in report.converted],
                        "options": {"dtype": opts.dtype, "quantize": opts.quantize, "group_size": opts.group_size},
                    },
                    indent=2,
                )
                + "\n"
            )
    except FileExistsError:
        raise AceStepError(
            f"{dst}: appeared while converting (another conversion into it?); it was left as it is"
        ) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise AceStepError(f"{dst}: no space left on the device; nothing was written") from None
        raise AceStepError(f"{dst}: cannot write the conversion ({e.strerror or e}); nothing was written") from None
    return report
