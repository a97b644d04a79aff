"""Where models come from: converted folders, checkpoint roots converted once into the cache, the
Hugging Face cache (offline, pre-populated here: never the network), and the errors of each."""

import hashlib
import json
import os
import shutil

import helpers
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mlx_acestep.errors import AceStepError
from mlx_acestep.hub import resolve_model

NEEDED = ("vae", "acestep-v15-turbo", "Qwen3-Embedding-0.6B")


@pytest.fixture
def root(fixtures, tmp_path):
    """A writable copy of the fixture checkpoint root (original layout)."""
    dst = tmp_path / "checkpoints"
    shutil.copytree(fixtures / "checkpoints", dst)
    return dst


def test_a_converted_folder_is_used_as_it_is(converted, tmp_path):
    folders = resolve_model(converted, cache_dir=tmp_path)
    assert (folders.dit, folders.vae, folders.text_encoder) == (
        converted / "acestep-v15-turbo",
        converted / "vae",
        converted / "Qwen3-Embedding-0.6B",
    )
    assert resolve_model(converted, dit="acestep-v15-base", cache_dir=tmp_path).dit.name == "acestep-v15-base"
    with pytest.raises(
        AceStepError, match=r"no DiT 'acestep-v15-xl' \(available: acestep-v15-base, acestep-v15-turbo\)"
    ):
        resolve_model(converted, dit="acestep-v15-xl", cache_dir=tmp_path)


def entry_components(folder):
    """The component folders of the cache entry holding `folder`."""
    return sorted(p.name for p in folder.parent.iterdir() if p.is_dir())


def test_a_checkpoint_root_is_converted_once_with_only_what_the_pipeline_needs(root, tmp_path):
    logs = []
    first = resolve_model(root, cache_dir=tmp_path / "cache", log=logs.append)
    converted = tmp_path / "cache" / "converted"
    assert {first.dit.parent.parent, first.vae.parent.parent, first.text_encoder.parent.parent} == {converted}
    # one entry per component, and only those three (not the base DiT, not the LM's source converted twice)
    assert [entry_components(f) for f in (first.dit, first.vae, first.text_encoder)] == [
        [n] for n in ("acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B")
    ]
    assert first.dit.parent.name.startswith("checkpoints-acestep-v15-turbo-")
    assert sum(" into " in m for m in logs) == 4  # DiT, text encoder, VAE and the planner, one entry each
    logs.clear()
    again = resolve_model(root, cache_dir=tmp_path / "cache", log=logs.append)
    assert again == first and not any(m.startswith("converting") for m in logs)
    assert sum(m.startswith("using the converted") for m in logs) == 4


def test_every_dit_variant_and_quantization_of_a_source_shares_its_vae(root, tmp_path):
    cache = tmp_path / "cache"
    first = resolve_model(root, cache_dir=cache, lm=None)
    logs = []
    base = resolve_model(root, dit="acestep-v15-base", cache_dir=cache, lm=None, log=logs.append)
    assert base.dit.name == "acestep-v15-base" and base.dit.parent != first.dit.parent
    assert (base.vae, base.text_encoder) == (first.vae, first.text_encoder)
    assert [m.split(" into ")[0] for m in logs if " into " in m] == ["converting acestep-v15-base"]
    q8 = resolve_model(root, quantize="q8", cache_dir=cache, lm=None)
    assert q8.vae == first.vae  # all convolutions: nothing to quantize, so the same entry
    assert q8.text_encoder != first.text_encoder and q8.dit != first.dit
    assert json.loads((q8.text_encoder / "config.json").read_text())["quantization"]["bits"] == 8
    q8_group = resolve_model(root, quantize="q8", q_group_size=32, cache_dir=cache, lm=None)
    assert q8_group.vae == first.vae and q8_group.text_encoder != q8.text_encoder
    bf16 = resolve_model(root, dtype="bfloat16", cache_dir=cache, lm=None)
    assert not {bf16.vae, bf16.text_encoder, bf16.dit} & {first.vae, first.text_encoder, first.dit}
    assert json.loads((bf16.vae / "config.json").read_text())["dtype"] == "bfloat16"
    # what is shared is the same as a conversion of its own: the fixture's VAE converted alone
    from mlx_acestep.convert import convert_checkpoints

    convert_checkpoints(root, tmp_path / "alone", only=["vae"])
    assert (
        load_file(str(first.vae / "model.safetensors")).keys()
        == load_file(str(tmp_path / "alone" / "vae" / "model.safetensors")).keys()
    )
    for key, value in load_file(str(tmp_path / "alone" / "vae" / "model.safetensors")).items():
        np.testing.assert_array_equal(load_file(str(q8.vae / "model.safetensors"))[key], value)


def test_the_planner_lm_is_converted_into_an_entry_of_its_own(root, converted, tmp_path):
    cache = tmp_path / "cache"
    auto = resolve_model(root, cache_dir=cache)  # the root has only the 0.6B planner: "auto" takes it
    assert auto.lm.name == "acestep-5Hz-lm-0.6B" and auto.lm.parent != auto.dit.parent
    assert sorted(p.name for p in auto.lm.parent.iterdir() if p.is_dir()) == ["acestep-5Hz-lm-0.6B"]
    q8 = resolve_model(root, lm="0.6B", lm_quantize="q8", cache_dir=cache)
    assert q8.lm.parent != auto.lm.parent and q8.dit == auto.dit  # the rest is not converted again
    assert resolve_model(root, lm=None, cache_dir=cache).lm is None
    with pytest.raises(AceStepError, match=r"no planner LM 1.7B \(available: acestep-5Hz-lm-0.6B\)"):
        resolve_model(root, lm="1.7B", cache_dir=cache)
    with pytest.raises(AceStepError, match="unknown planner LM '2B'"):
        resolve_model(root, lm="2B", cache_dir=cache)
    assert resolve_model(converted, cache_dir=cache).lm == converted / "acestep-5Hz-lm-0.6B"
    shutil.rmtree(root / "acestep-5Hz-lm-0.6B")
    assert resolve_model(root, cache_dir=cache).lm is None  # "auto" without a planner: none, no error


def test_an_entry_another_run_converted_meanwhile_is_used(root, tmp_path, monkeypatch):
    """Two runs converting two DiTs of one source at once both need its VAE: the one that finishes second uses the
    first one's entry instead of failing."""
    import mlx_acestep.convert as convert

    real = convert.convert_checkpoints

    def racing(src, dst, opts, log=None, only=None):
        real(src, dst, opts, only=only)  # the other run, finishing first
        return real(src, dst, opts, log=log, only=only)  # this one: finds its destination taken

    monkeypatch.setattr(convert, "convert_checkpoints", racing)
    logs = []
    folders = resolve_model(root, cache_dir=tmp_path, lm=None, log=logs.append)
    assert sum("converted meanwhile by another run" in m for m in logs) == 3
    assert load_file(str(folders.vae / "model.safetensors"))


def test_a_changed_source_converts_again_only_what_it_changed(root, tmp_path):
    first = resolve_model(root, cache_dir=tmp_path, lm=None)
    (root / "vae" / "config.json").write_text((root / "vae" / "config.json").read_text() + "\n")
    second = resolve_model(root, cache_dir=tmp_path, lm=None)
    assert second.vae != first.vae and (second.dit, second.text_encoder) == (first.dit, first.text_encoder)
    tokenizer = root / "Qwen3-Embedding-0.6B" / "tokenizer_config.json"
    tokenizer.write_text(tokenizer.read_text() + "\n")
    third = resolve_model(root, cache_dir=tmp_path, lm=None)
    assert third.text_encoder != second.text_encoder and (third.dit, third.vae) == (second.dit, second.vae)


def test_a_damaged_cache_entry_is_a_one_line_error_and_reconvert_repairs_it(root, tmp_path):
    weights = resolve_model(root, cache_dir=tmp_path).dit / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(AceStepError, match="damaged; delete it") as info:
        resolve_model(root, cache_dir=tmp_path)
    assert "\n" not in str(info.value)
    assert resolve_model(root, cache_dir=tmp_path, reconvert=True).dit == weights.parent
    assert weights.stat().st_size > 0 and len(load_file(str(weights))) > 0


def test_an_empty_entry_left_by_a_killed_run_is_converted_again(root, tmp_path):
    """A run killed between claiming its entry's name and renaming its conversion in leaves an empty folder."""
    first = resolve_model(root, cache_dir=tmp_path, lm=None)
    shutil.rmtree(first.vae.parent)
    first.vae.parent.mkdir()
    again = resolve_model(root, cache_dir=tmp_path, lm=None)
    assert again == first and (again.vae / "config.json").is_file()


def test_a_failed_conversion_leaves_no_cache_entry(root, tmp_path):
    """The DiT converts first: refused, nothing else was converted either."""
    state = load_file(str(root / "acestep-v15-turbo" / "model.safetensors"))
    del state["decoder.norm_out.weight"]
    save_file(state, str(root / "acestep-v15-turbo" / "model.safetensors"))
    with pytest.raises(AceStepError, match="missing key 'decoder.norm_out.weight'"):
        resolve_model(root, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "converted").iterdir()) == []


def test_a_damaged_tokenizer_is_named_when_converting_not_when_loading(root, tmp_path):
    (root / "Qwen3-Embedding-0.6B" / "tokenizer.json").write_text("{garbage")
    with pytest.raises(AceStepError, match=r"Qwen3-Embedding-0.6B/tokenizer.json: not valid JSON"):
        resolve_model(root, cache_dir=tmp_path, lm=None)
    assert not any(p.name.startswith("checkpoints-Qwen3") for p in (tmp_path / "converted").iterdir())


def shard(folder, name="model.safetensors"):
    """Split a folder's weights into two shards with an index, as Hugging Face writes large checkpoints."""
    import json

    state = load_file(str(folder / name))
    keys = sorted(state)
    parts = {f"model-0000{i + 1}-of-00002.safetensors": keys[i::2] for i in range(2)}
    for file, part in parts.items():
        save_file({k: state[k] for k in part}, str(folder / file), metadata={"format": "pt"})
    (folder / f"{name}.index.json").write_text(
        json.dumps({"weight_map": {k: f for f, ks in parts.items() for k in ks}})
    )
    (folder / name).unlink()
    return list(parts)


@pytest.mark.parametrize("folder", ["acestep-v15-turbo", "Qwen3-Embedding-0.6B"])
def test_sharded_sources_convert_as_one_file(root, tmp_path, folder):
    from mlx_acestep.loading import load_component

    shard(root / folder)
    folders = resolve_model(root, cache_dir=tmp_path / "cache", lm=None)
    load_component(folders.dit if folder.startswith("acestep") else folders.text_encoder)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing shard", r"model.safetensors.index.json: lists model-00002-of-00002.safetensors, which is missing"),
        ("unlisted key", r"model-00001-of-00002.safetensors: key '.+' is not listed for this shard"),
        (
            "integer tensor",
            r"model.safetensors.index.json: tensor 'decoder.norm_out.weight' has dtype mlx.core.int32, expected a floating",
        ),
    ],
)
def test_a_damaged_sharded_checkpoint_is_one_line_and_leaves_nothing(root, tmp_path, damage, message):
    import json

    files = shard(root / "acestep-v15-turbo")
    index = root / "acestep-v15-turbo" / "model.safetensors.index.json"
    if damage == "missing shard":
        (root / "acestep-v15-turbo" / files[1]).unlink()
    elif damage == "unlisted key":
        weight_map = json.loads(index.read_text())["weight_map"]
        index.write_text(json.dumps({"weight_map": {k: v for k, v in list(weight_map.items())[1:]}}))
    else:
        weight_map = json.loads(index.read_text())["weight_map"]
        path = root / "acestep-v15-turbo" / weight_map["decoder.norm_out.weight"]
        state = load_file(str(path))
        state["decoder.norm_out.weight"] = state["decoder.norm_out.weight"].astype("int32")
        save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(AceStepError, match=message) as info:
        resolve_model(root, cache_dir=tmp_path / "cache", lm=None)
    assert "\n" not in str(info.value)
    assert [p.name for p in (tmp_path / "cache" / "converted").iterdir()] == []


@pytest.mark.parametrize(
    "model, message",
    [
        ("./no-such-folder", "unknown model './no-such-folder'"),
        ("not a repo", "unknown model 'not a repo'"),
    ],
)
def test_unknown_models_are_one_line_errors(model, message, tmp_path):
    with pytest.raises(AceStepError, match=message):
        resolve_model(model, cache_dir=tmp_path)


def test_incomplete_roots_say_what_is_missing(root, tmp_path):
    shutil.rmtree(root / "vae")
    with pytest.raises(AceStepError, match=r"no vae/ folder"):
        resolve_model(root, cache_dir=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(AceStepError, match="is a file"):
        resolve_model(tmp_path / "file", cache_dir=tmp_path)


# -- the Hugging Face path, through the command line, offline ---------------------------------------


def populate_hub_cache(hub, repo_id, source, folders, commit="0123456789abcdef0123456789abcdef01234567"):
    """Lay files out as huggingface_hub stores them: content-addressed blobs, snapshot symlinks, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for folder in folders:
        for path in sorted((source / folder).iterdir()):
            data = path.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = repo / "snapshots" / commit / folder / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))


def run_cli(args, tmp_path, hub):
    """A fresh process: huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE once, when it is imported."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "MLX_ACESTEP_CACHE": str(tmp_path / "cache")}
    return helpers.run_cli(args, tmp_path, env=env, fresh_process=True, timeout=300)


def test_the_default_repo_comes_from_the_hub_cache_offline(fixtures, tmp_path):
    import soundfile as sf

    populate_hub_cache(tmp_path / "hub", "ACE-Step/Ace-Step1.5", fixtures / "checkpoints", NEEDED)
    done = run_cli(
        ["generate", "soft rain", "--duration", "10", "--seed", "1", "-o", "rain.wav"], tmp_path, tmp_path / "hub"
    )
    assert done.returncode == 0, done.stderr
    info = sf.info(tmp_path / "rain.wav")
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 480000)
    assert "wrote rain.wav" in done.stdout and "RTF" in done.stdout and "peak memory" in done.stdout
    entries = sorted(p.name for p in (tmp_path / "cache" / "converted").iterdir())
    # named by the repo, not by the snapshot's commit hash: one entry per component
    assert [e.rsplit("-", 1)[0] for e in entries] == [
        "Ace-Step1.5-Qwen3-Embedding-0.6B",
        "Ace-Step1.5-acestep-v15-turbo",
        "Ace-Step1.5-vae",
    ]


def test_a_new_snapshot_with_the_same_files_keeps_its_entries(fixtures, tmp_path):
    """A new commit of the repo (a README edit) is a new snapshot folder linking the same blobs: nothing is
    converted again; a component whose file did change (a new blob) is, alone."""
    hub = tmp_path / "hub"
    populate_hub_cache(hub, "ACE-Step/Ace-Step1.5", fixtures / "checkpoints", NEEDED)
    snapshots = hub / "models--ACE-Step--Ace-Step1.5" / "snapshots"
    old = next(snapshots.iterdir())
    new = snapshots / ("f" * 40)
    for link in old.rglob("*"):
        if link.is_symlink():
            copy = new / link.relative_to(old)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.symlink_to(os.readlink(link))
    first = resolve_model(old, cache_dir=tmp_path / "cache", lm=None)
    assert resolve_model(new, cache_dir=tmp_path / "cache", lm=None) == first
    edited = (new / "vae" / "config.json").read_text() + "\n"
    blob = hub / "models--ACE-Step--Ace-Step1.5" / "blobs" / hashlib.sha256(edited.encode()).hexdigest()
    blob.write_text(edited)
    (new / "vae" / "config.json").unlink()
    (new / "vae" / "config.json").symlink_to(os.path.relpath(blob, new / "vae"))
    changed = resolve_model(new, cache_dir=tmp_path / "cache", lm=None)
    assert changed.vae != first.vae and (changed.dit, changed.text_encoder) == (first.dit, first.text_encoder)


def test_offline_with_nothing_cached_says_what_to_download(tmp_path):
    (tmp_path / "hub").mkdir()
    done = run_cli(["generate", "soft rain", "--duration", "10", "-o", "rain.wav"], tmp_path, tmp_path / "hub")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert (
        len(error) == 1
        and "not in the local Hugging Face cache and downloading is off (HF_HUB_OFFLINE is set)" in error[0]
    )
    assert "fetching" not in done.stderr and "HF_HUB_OFFLINE is set: no download" in done.stderr
    assert not (tmp_path / "rain.wav").exists()
    command = error[0].split("run `", 1)[1].split("`", 1)[0]
    assert command_patterns(command) == (
        {"acestep-v15-turbo/*", "vae/*", "Qwen3-Embedding-0.6B/*", "acestep-5Hz-lm-1.7B/*"},
        "checkpoints",
    )


def command_patterns(command: str) -> tuple[set, str]:
    """What the `hf` CLI that huggingface_hub installs would download for `command`, read by its own parser."""
    import shlex

    import huggingface_hub.cli.download as hf_download
    from click.testing import CliRunner
    from huggingface_hub.cli.hf import app

    seen = {}

    def fake_snapshot(**kwargs):
        seen.update(kwargs)
        return "/nowhere"

    argv = shlex.split(command)
    assert argv[:2] == ["hf", "download"]
    original = hf_download.snapshot_download
    hf_download.snapshot_download = fake_snapshot
    try:
        result = CliRunner().invoke(app, argv[1:])
    finally:
        hf_download.snapshot_download = original
    assert result.exit_code == 0, result.output
    return set(seen["allow_patterns"]), seen["local_dir"]


def test_a_failed_download_says_so_with_the_reason(monkeypatch, tmp_path):
    """Online, a network failure is not 'downloading is off': the message says it failed and why."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from mlx_acestep.hub import download

    def unreachable(*args, **kwargs):
        try:
            raise ConnectionError("Failed to resolve 'huggingface.co'")
        except ConnectionError as cause:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache") from cause

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    logged = []
    with pytest.raises(AceStepError, match=r"could not be downloaded \(Failed to resolve 'huggingface.co'\)") as info:
        download("ACE-Step/Ace-Step1.5", None, logged.append, quiet=True, lm="auto")
    assert "fetching ACE-Step/Ace-Step1.5" in logged[0]
    assert command_patterns(str(info.value).split("run `", 1)[1].split("`", 1)[0])[0] >= {
        "acestep-v15-turbo/*",
        "vae/*",
    }


def test_the_planner_comes_from_the_hub_cache_too(fixtures, tmp_path):
    """A planner folder in the cached snapshot is used offline; a size that lives in its own repo (4B) and is not
    cached is a one-line error naming the download."""
    populate_hub_cache(
        tmp_path / "hub", "ACE-Step/Ace-Step1.5", fixtures / "checkpoints", NEEDED + ("acestep-5Hz-lm-0.6B",)
    )
    done = run_cli(
        ["generate", "soft rain", "--duration", "10", "--seed", "1", "--lm", "0.6B", "-o", "rain.wav"],
        tmp_path,
        tmp_path / "hub",
    )
    assert done.returncode == 0, done.stderr
    assert "planner: bpm" in done.stdout
    done = run_cli(
        ["generate", "soft rain", "--duration", "10", "--lm", "4B", "-o", "x.wav"], tmp_path, tmp_path / "hub"
    )
    error = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 1 and len(error) == 1, done.stderr
    assert "hf download ACE-Step/acestep-5Hz-lm-4B --local-dir checkpoints/acestep-5Hz-lm-4B" in error[0]
