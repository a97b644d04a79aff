"""Where a model comes from: a converted folder, a PyTorch checkpoint root, a Hugging Face repo, or "tiny".

`resolve_model` finds (downloading as needed) the checkpoint a `ModelSource` names and returns its converted
folders: a converted root is used as it is; a PyTorch checkpoint (original or diffusers layout, local or
downloaded) is converted once, one component per cache entry (cache.py owns the entries: names, keys, reuse).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import cached_entry, open_cache, source_label
from .errors import AceStepError, MissingDiT, first_line
from .loading import LAYOUT_VERSION, SILENCE_FILE, WEIGHTS_FILE, read_json
from .names import DEFAULT_DIT, DEFAULT_LM, DEFAULT_REPO, LM_PREFIX, LM_SIZES, TEXT_ENCODER, VAE_DIR  # noqa: F401
from .safetensors_io import read_header, weight_files
from .source import ModelSource

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
# What a pipeline needs from a repo, in either layout (patterns that match nothing cost nothing).
_DIFFUSERS_PATTERNS = [
    "model_index.json",
    "silence_latent.pt",
    "transformer/*",
    "condition_encoder/*",
    "audio_tokenizer/*",
    "audio_token_detokenizer/*",
    "text_encoder/*",
    "tokenizer/*",
]

Log = Callable[[str], None]


@dataclass
class ModelFolders:
    """Converted MLX component folders (`mlx-acestep convert`): what a pipeline loads."""

    text_encoder: Path
    dit: Path
    vae: Path
    lm: Path | None = None  # the planner LM (optional: without it, no thinking)

    def __post_init__(self):
        for name in ("text_encoder", "dit", "vae"):
            setattr(self, name, Path(getattr(self, name)))
        if self.lm is not None:
            self.lm = Path(self.lm)


def resolve_source(source: ModelSource, log: Log | None = None):
    """The converted folders (`ModelFolders`) of a `ModelSource`, converting and downloading as needed."""
    return resolve_model(**dataclasses.asdict(source), log=log)


def resolve_model(
    model: str | Path,
    *,
    dit: str | None = None,
    dtype: str = "auto",
    quantize: str | None = None,
    q_group_size: int = 64,
    lm: str | None = "auto",
    lm_quantize: str | None = None,
    cache_dir: str | Path | None = None,
    reconvert: bool = False,
    log: Log | None = None,
):
    """The converted folders (text encoder, DiT, VAE, planner LM) for `model`, converting and downloading as needed.

    `lm`: "0.6B", "1.7B" or "4B" (an error if absent), "auto" (the default 1.7B when the model has it, else
    the one it has, else none) or None (no planner).
    """
    ModelSource(model, dit, dtype, quantize, q_group_size, lm, lm_quantize, cache_dir, reconvert)  # its rules, checked
    quiet = log is None  # a library call prints nothing, not even huggingface_hub's download bars
    log = log or (lambda msg: None)
    cache = open_cache(cache_dir)
    name = str(model)
    if name == "tiny":
        src = tiny_checkpoint(cache, log)
    elif Path(name).expanduser().exists():
        src = Path(name).expanduser().resolve()
        if not src.is_dir():
            raise AceStepError(f"{src}: is a file; --model takes a checkpoint folder, a Hugging Face repo id or 'tiny'")
    elif _REPO_ID.fullmatch(name) and not name.startswith((".", "/")):
        src = download(name, dit, log, quiet, lm)
    else:
        raise AceStepError(
            f"unknown model {name!r}: no such folder, and not a Hugging Face repo id (owner/name) or 'tiny'"
        )

    if converted_components(src):
        if dtype != "auto" or quantize:
            log(f"{src} is already converted: its own dtype and quantization are used")
        folders = pick_components(src, dit)
        planner = pick_lm({f.name: f for f in converted_components(src).get("lm", [])}, lm, src)
        if planner is not None:
            check_converted(planner)
        return ModelFolders(**folders, lm=planner)
    folders = convert_cached(src, dit, dtype, quantize, q_group_size, cache, reconvert, log)
    planner = None
    if lm is not None:
        source = _lm_source(src, name, lm, log, quiet)
        if source is not None:
            planner = convert_lm_cached(source, dtype, lm_quantize, q_group_size, cache, reconvert, log)
    return ModelFolders(**folders, lm=planner)


def pick_lm(available: dict[str, Path], lm: str | None, where: Path | str) -> Path | None:
    """The planner folder for `lm` among {folder name: folder} (see `resolve_model`)."""
    if lm is None or (lm == "auto" and not available):
        return None
    if not available:
        raise AceStepError(
            f"{where}: no planner LM (acestep-5Hz-lm-*) in this model; pass --no-thinking or another --lm"
        )
    if lm == "auto":
        default = [f for n, f in available.items() if n.endswith(DEFAULT_LM)]
        return (default or [available[n] for n in sorted(available)])[0]
    match = [f for n, f in available.items() if n.endswith(f"-{lm}") or n == lm]
    if not match:
        raise AceStepError(f"{where}: no planner LM {lm} (available: {', '.join(sorted(available))})")
    return match[0]


def converted_components(root: Path) -> dict[str, list[Path]]:
    """Converted component folders under `root` by component name ({} if it is not a converted root)."""
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        config = folder / "config.json"
        ours = (folder / "manifest.json").is_file()  # the converter writes one into every component folder
        if not config.is_file():
            if ours:
                raise AceStepError(
                    f"{folder}: damaged converted component (no config.json); delete it (or pass "
                    "--reconvert) and run again"
                )
            continue
        try:
            fields = json.loads(config.read_text())
        except (OSError, ValueError) as e:
            if ours:
                raise AceStepError(
                    f"{config}: damaged converted component (not JSON: {e}); delete the folder (or "
                    "pass --reconvert) and run again"
                ) from None
            continue
        if isinstance(fields, dict) and "layout_version" in fields and "component" in fields:
            found.setdefault(fields["component"], []).append(folder)
        elif ours:
            raise AceStepError(
                f"{config}: damaged converted component (no layout_version / component); delete the "
                "folder (or pass --reconvert) and run again"
            )
    return found


def _default_dit(dits: dict[str, Path]) -> str:
    """The DiT used when none is named: the official turbo, else any turbo, else the first (by output name)."""
    if DEFAULT_DIT in dits:
        return DEFAULT_DIT
    turbo = [name for name, folder in dits.items() if read_json(folder / "config.json").get("is_turbo")]
    return (turbo or sorted(dits))[0]


def pick_components(root: Path, dit: str | None) -> dict[str, Path]:
    """{text_encoder, dit, vae} folders of a converted root, each checked to be whole."""
    found = converted_components(root)
    missing = [c for c in ("text_encoder", "dit", "vae") if not found.get(c)]
    if missing:
        raise AceStepError(
            f"{root}: no converted {', '.join(missing)} folder (the pipeline needs a text encoder, a DiT and the VAE)"
        )
    dits = {d.name: d for d in found["dit"]}
    if dit is not None and dit not in dits:
        raise MissingDiT(root, dit, dits)
    chosen = dits[dit or _default_dit(dits)]
    text = next((t for t in found["text_encoder"] if t.name == TEXT_ENCODER), found["text_encoder"][0])
    folders = {"text_encoder": text, "dit": chosen, "vae": found["vae"][0]}
    for folder in folders.values():
        check_converted(folder)
    return folders


def check_converted(folder: Path) -> None:
    """Cheap integrity check (config, weight header and size, silence latent) with a one-line error."""
    try:
        config = read_json(folder / "config.json")
        if config.get("layout_version") != LAYOUT_VERSION:
            raise AceStepError(f"{folder}: layout_version {config.get('layout_version')!r} is not {LAYOUT_VERSION}")
        for path in weight_files(folder, WEIGHTS_FILE)[0]:
            read_header(path)
        if config.get("component") == "dit":
            read_header(folder / SILENCE_FILE)
    except AceStepError as e:
        raise AceStepError(
            f"{e} — this converted folder is damaged; delete it (or pass --reconvert) and run again"
        ) from None


# -- conversion cache ---------------------------------------------------------------------------


def convert_cached(
    src: Path, dit: str | None, dtype: str, quantize: str | None, group: int, cache: Path, reconvert: bool, log: Log
) -> dict[str, Path]:
    """{text_encoder, dit, vae} of a checkpoint root, each converted once into a cache entry of its own.

    An entry is keyed on what its component is made from (its folder and whatever else its converter reads) and on
    the options that change it, so every DiT variant and quantization of one source shares one VAE and (per
    quantization) one text encoder. The DiT goes first: it is what this request adds, and the likeliest to be refused.
    """
    from .convert.converter import find_components

    found = find_components(src)
    if not found:
        raise AceStepError(
            f"{src}: not an ACE-Step 1.5 checkpoint (expected vae/, acestep-v15-*/ and {TEXT_ENCODER}/, "
            "a diffusers folder with model_index.json, or a folder made by `mlx-acestep convert`)"
        )
    label = source_label(src)
    folders = {}
    for kind, (spec, folder, name) in _needed_components(src, found, dit).items():
        # The VAE is all convolutions, which MLX does not quantize: one entry serves every --quantize.
        opts = _options(dtype, quantize if kind != "vae" else None, group, reconvert)
        sources = [folder, *(src / path for path in spec.reads if (src / path).exists())]
        folders[kind] = cached_entry(src, f"{label}-{name}", [name], sources, opts, cache, reconvert, log) / name
        check_converted(folders[kind])
    return folders


def convert_lm_cached(
    folder: Path, dtype: str, quantize: str | None, group: int, cache: Path, reconvert: bool, log: Log
) -> Path:
    """A planner LM source folder converted into its own cache entry (toggling the planner never reconverts the rest)."""
    opts = _options(dtype, quantize, group, reconvert)
    if folder.name.startswith(LM_PREFIX):  # inside a checkpoint root: convert just it, under its own name
        src, only, label = folder.parent, [folder.name], f"{source_label(folder.parent)}-{folder.name}"
    else:  # a repo of its own (a snapshot folder): converted as a single component named "lm"
        src, only, label = folder, None, f"{source_label(folder)}-lm"
    entry = cached_entry(src, label, only, [folder], opts, cache, reconvert, log)
    check_converted(entry / (folder.name if only else "lm"))
    return entry / (folder.name if only else "lm")


def _options(dtype: str, quantize: str | None, group: int, reconvert: bool):
    """A component's conversion options; the group size only matters (and is only keyed) when it is quantized."""
    from .convert import ConvertOptions

    quantize = quantize if quantize not in (None, "none") else None
    return ConvertOptions(
        dtype=dtype,
        quantize=quantize or "none",
        group_size=group if quantize else ConvertOptions.group_size,
        force=reconvert,
    )


def _lm_source(src: Path, name: str, lm: str, log: Log, quiet: bool) -> Path | None:
    """The planner's source folder in a checkpoint root; a separate repo for the sizes the main repo lacks."""
    available = {p.name: p for p in sorted(src.glob(LM_PREFIX + "*")) if p.is_dir()}
    if (
        lm not in ("auto", DEFAULT_LM)
        and not any(n.endswith(f"-{lm}") for n in available)
        and _REPO_ID.fullmatch(name)
        and not Path(name).exists()
    ):
        return download(f"ACE-Step/{LM_PREFIX}{lm}", None, log, quiet, lm, whole=True)
    return pick_lm(available, lm, src)


def _needed_components(src: Path, found, dit: str | None) -> dict[str, tuple]:
    """{kind: (spec, source folder, output name)} of the chosen DiT, the text encoder and the VAE (the same names
    from either layout)."""
    kinds: dict[str, dict[str, tuple]] = {}
    for spec, folder, name in found:
        kinds.setdefault(spec.kind, {})[name] = (spec, folder, name)
    missing = [
        name
        for name, kind in (("vae/", "vae"), (f"{TEXT_ENCODER}/", "text_encoder"), ("acestep-v15-*/", "dit"))
        if not kinds.get(kind)
    ]
    if missing:
        raise AceStepError(
            f"{src}: no {', '.join(missing)} folder (a full checkpoint root has vae/, {TEXT_ENCODER}/ and a DiT)"
        )
    dits = kinds["dit"]
    if dit is not None and dit not in dits:
        raise MissingDiT(src, dit, sorted(dits), what="DiT folder")
    texts = kinds["text_encoder"]
    return {
        "dit": dits[dit or _default_dit({n: f for n, (_, f, _) in dits.items()})],
        "text_encoder": texts.get(TEXT_ENCODER) or next(iter(texts.values())),
        "vae": next(iter(kinds["vae"].values())),
    }


# -- sources ------------------------------------------------------------------------------------


def download_command(repo_id: str, patterns: list[str] | None) -> str:
    """The `hf download` line that fetches `patterns` (None: the whole repo) into a folder `--model` accepts.

    The patterns are positional: every `hf` CLI reads two or more as snapshot patterns, whereas `--include`
    takes one value per flag since huggingface_hub 1.0 (further values become file names) and keeps only the
    last of repeated flags before it (0.34-0.36 parse it with argparse).
    """
    include = "".join(f' "{p}"' for p in patterns or [])
    dest = "checkpoints" if patterns else f"checkpoints/{repo_id.split('/')[1]}"
    return f"hf download {repo_id}{include} --local-dir {dest}"


def download(
    repo_id: str, dit: str | None, log: Log, quiet: bool = False, lm: str | None = None, whole: bool = False
) -> Path:
    """The repo's files the pipeline needs, via the Hugging Face cache (works offline once cached).

    `whole`: a repo that is one component (the separate planner LMs): every file, the snapshot is the folder.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    wanted = ["*"] if whole else [f"{dit or DEFAULT_DIT}/*", "vae/*", f"{TEXT_ENCODER}/*"]
    optional = [] if whole or lm is None else [f"{LM_PREFIX}{DEFAULT_LM if lm == 'auto' else lm}/*"]
    command = download_command(repo_id, None if whole else wanted + optional)
    how = f"on a connected machine run `{command}` and pass `--model {command.rsplit(' ', 1)[1]}`"
    offline = bool(constants.HF_HUB_OFFLINE)
    if offline:
        log(f"looking for {repo_id} in the local Hugging Face cache (HF_HUB_OFFLINE is set: no download)")
    else:
        log(f"fetching {repo_id} from Hugging Face (cached after the first time)")
    bars = hf_progress_bars(enabled=not quiet)
    try:
        path = Path(
            snapshot_download(repo_id, allow_patterns=None if whole else wanted + optional + _DIFFUSERS_PATTERNS)
        )
    except LocalEntryNotFoundError as e:
        if offline:
            raise AceStepError(
                f"{repo_id} is not in the local Hugging Face cache and downloading is off "
                f"(HF_HUB_OFFLINE is set); {how}"
            ) from None
        reason = first_line(e.__cause__ or e.__context__ or e)
        raise AceStepError(
            f"{repo_id} could not be downloaded ({reason}) and is not in the local Hugging Face cache; {how}"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise AceStepError(
            f"{repo_id}: no such model on Hugging Face (or it is private: log in with `hf auth login`)"
        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise AceStepError(f"{repo_id} could not be downloaded ({first_line(e)}); {how}") from None
    finally:
        bars()
    if not whole and not (path / "model_index.json").is_file():
        missing = [p[:-2] for p in wanted if not (path / p[:-2]).is_dir()]
        if missing:
            raise AceStepError(f"{repo_id}: the downloaded snapshot {path} has no {', '.join(missing)}/ folder; {how}")
    return path


def hf_progress_bars(enabled: bool) -> Callable[[], None]:
    """Switch huggingface_hub's progress bars off if not `enabled`; returns what restores them."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if enabled or are_progress_bars_disabled():
        return lambda: None
    disable_progress_bars()
    return enable_progress_bars


def tiny_checkpoint(cache: Path, log: Log) -> Path:
    """A tiny random-weight checkpoint root in the original layout, built once into the cache."""
    from .tiny import build_tiny_checkpoint

    root = cache / "tiny-checkpoint"
    if not root.is_dir():
        log(f"building the tiny random-weight checkpoint in {root}")
        cache.mkdir(parents=True, exist_ok=True)
        try:
            build_tiny_checkpoint(root)
        except AceStepError:
            if not root.is_dir():  # another process may have built it meanwhile
                raise
    return root
