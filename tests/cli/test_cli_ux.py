"""Command-line conveniences through the real CLI: captions from files and stdin, -m, the Linux speed hint."""

import importlib
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from helpers import assert_one_line_error, run_cli


# The runs here say --duration 5: the DiT renders its 128-frame minimum (5.12 s) anyway, and a longer song only
# costs decode time; what is checked (files, sidecars, replays) does not depend on the length.
def cli(args, cwd, stdin=None, fresh_process=False):
    return run_cli(args, cwd, env={"MLX_ACESTEP_CACHE": str(cwd / "cache")}, stdin=stdin, fresh_process=fresh_process)


def test_caption_from_a_file_and_from_stdin_with_the_short_model_flag(converted, tmp_path):
    (tmp_path / "caption.txt").write_text("soft rain on a tin roof\n")
    done = cli(
        [
            "generate",
            "--prompt-file",
            "caption.txt",
            "-m",
            str(converted),
            "--duration",
            "5",
            "--seed",
            "2",
            "-o",
            "a.wav",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    piped = cli(
        ["generate", "--prompt-file", "-", "-m", str(converted), "--duration", "5", "--seed", "2", "-o", "b.wav"],
        tmp_path,
        stdin="soft rain on a tin roof\n",
    )
    assert piped.returncode == 0, piped.stderr
    a, _ = sf.read(str(tmp_path / "a.wav"))
    b, _ = sf.read(str(tmp_path / "b.wav"))
    assert (a == b).all()  # the same caption, however it came


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "give the caption as CAPTION or --prompt-file"),
        (["x", "--prompt-file", "caption.txt"], "give the caption as CAPTION or --prompt-file"),
        (["--prompt-file", "-", "--lyrics-file", "-"], "only one of --prompt-file and --lyrics-file can read stdin"),
        (["--prompt-file", "words.wav", "-o", "words.wav"], "words.wav: is the --prompt-file file"),
    ],
)
def test_caption_errors_are_one_line(tmp_path, args, needle):
    (tmp_path / "caption.txt").write_text("x")
    (tmp_path / "words.wav").write_text("a caption in a file with an audio name")
    assert_one_line_error(cli(["generate", *args], tmp_path), needle)


def test_the_linux_speed_hint_shows_only_without_openblas(converted, tmp_path, monkeypatch, capsys):
    """The hint itself (checked in-process: a generation on the reference BLAS takes minutes), and through the
    real CLI that a run with OpenBLAS preloaded (CI's) prints none."""
    import platform

    from mlx_acestep.blas import openblas_coretype, preload_command
    from mlx_acestep.cli.generate import speed_hint

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    speed_hint()
    err = capsys.readouterr().err
    hinted = "hint: MLX's bundled CPU BLAS is ~40x slower" in err
    assert hinted == (platform.system() == "Linux")
    if hinted:  # with the kernel family this CPU needs named (a generic VM CPU otherwise gets a 6x slower kernel)
        assert preload_command() in err and (
            openblas_coretype() is None or f"OPENBLAS_CORETYPE={openblas_coretype()}" in err
        )
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")
    speed_hint()
    assert "hint:" not in capsys.readouterr().err
    if "openblas" in os.environ.get("LD_PRELOAD", ""):
        fast = cli(  # a fresh process: what it checks is the process's own environment
            ["generate", "x", "-m", str(converted), "--duration", "5", "--seed", "1", "-o", "fast.wav"],
            tmp_path,
            fresh_process=True,
        )
        assert fast.returncode == 0 and "hint:" not in fast.stderr, fast.stderr


def test_every_file_says_what_made_it_and_replays_bit_for_bit(converted, tmp_path):
    import json

    base = ["-m", str(converted), "--duration", "5"]
    first = cli(["generate", "rain on a tin roof", *base, "--seed", "5", "--bpm", "90", "-o", "a.wav"], tmp_path)
    assert first.returncode == 0, first.stderr
    meta = json.loads((tmp_path / "a.json").read_text())
    assert (meta["caption"], meta["seed"], meta["dit"], meta["task"]) == (
        "rain on a tin roof",
        5,
        "acestep-v15-turbo",
        "text2music",
    )
    assert (
        meta["sampler"]["shift"] == 3.0 and meta["software"].startswith("mlx-acestep ") and meta["replay"]["bpm"] == 90
    )
    with sf.SoundFile(str(tmp_path / "a.wav")) as f:
        assert f.title == "rain on a tin roof" and json.loads(f.comment)["seed"] == 5
    again = cli(["generate", "--from-metadata", "a.wav", "-o", "b.wav"], tmp_path)  # the audio file alone replays
    assert again.returncode == 0, again.stderr
    a, b = (sf.read(str(tmp_path / n))[0] for n in ("a.wav", "b.wav"))
    assert (a == b).all()  # bit for bit
    from mlx_acestep.cli.metadata import read_metadata

    assert read_metadata(tmp_path / "a.json") == read_metadata(tmp_path / "a.wav")  # the sidecar holds the same
    other = cli(["generate", "--from-metadata", "a.json", "--seed", "6", "-o", "d.wav"], tmp_path)
    assert other.returncode == 0 and json.loads((tmp_path / "d.json").read_text())["seed"] == 6
    assert not (sf.read(str(tmp_path / "d.wav"))[0] == a).all()


def test_sidecars_are_never_replaced_and_bad_metadata_is_one_line(tmp_path):
    (tmp_path / "e.json").write_text("my notes")
    taken = cli(["generate", "x", "-o", "e.wav"], tmp_path)
    assert taken.returncode != 0 and "e.json: already exists" in taken.stderr
    assert (tmp_path / "e.json").read_text() == "my notes" and not (tmp_path / "e.wav").exists()
    (tmp_path / "odd.json").write_text("{}")
    assert_one_line_error(
        cli(["generate", "--from-metadata", "odd.json"], tmp_path), "not metadata written by mlx-acestep"
    )


def test_a_shared_metadata_file_cannot_choose_where_files_go(converted, tmp_path):
    """A sidecar may come from anyone: a replay takes the settings that made the music, never the recorded
    output, --overwrite, caption files or cache options, and every recorded value is checked like its flag."""
    import json

    (tmp_path / "precious.wav").write_bytes(b"my song")
    (tmp_path / "secret.txt").write_text("my secret")
    hostile = {
        "caption": "rain",
        "model": str(converted),
        "duration": 10,
        "seed": 3,
        "output": "precious.wav",
        "overwrite": True,
        "prompt_file": "secret.txt",
        "cache_dir": str(tmp_path / "planted"),
        "reconvert": True,
    }
    (tmp_path / "shared.json").write_text(json.dumps({"replay": hostile}))
    done = cli(["generate", "--from-metadata", "shared.json", "-o", "mine.wav"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "precious.wav").read_bytes() == b"my song" and not (tmp_path / "planted").exists()
    meta = json.loads((tmp_path / "mine.json").read_text())
    assert meta["caption"] == "rain" and "converting" not in done.stderr
    assert meta["replay"]["model"] == str(converted.resolve())  # recorded absolute: replays from any folder
    for field, value in (("batch", "many"), ("batch", 1.5), ("thinking", 1), ("loras", [None])):
        (tmp_path / "typed.json").write_text(json.dumps({"replay": {"caption": "x", field: value}}))
        bad = cli(["generate", "--from-metadata", "typed.json"], tmp_path)
        assert_one_line_error(bad, f"typed.json: recorded {field} {value!r} is not valid")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lyrics-file", "lyr.json", "-o", "lyr.wav", "--overwrite"], "lyr.json: is the --lyrics-file file"),
        (["-o", "dangling.wav"], "dangling.json: already exists"),
        (["-o", "x{seed:q}.wav"], "Unknown format code 'q'"),
        (["-o", "a" * 300 + ".wav"], "bytes long (at most 220)"),
    ],
)
def test_outputs_and_their_sidecars_are_checked_before_any_work(tmp_path, args, needle):
    (tmp_path / "lyr.json").write_text("[verse] my lyrics")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.json")
    assert_one_line_error(cli(["generate", "x", *args], tmp_path), needle)
    assert (tmp_path / "lyr.json").read_text() == "[verse] my lyrics"


def test_cache_dir_list_and_rm(fixtures, tmp_path):
    from helpers import copy_vae_root

    # a cache entry as the hub makes them: the converter's output (with its conversion.json) under converted/
    copy_vae_root(fixtures, tmp_path / "src")
    name = "fixture-vae-0123456789ab"
    made = cli(["convert", str(tmp_path / "src"), str(tmp_path / "cache" / "converted" / name)], tmp_path)
    assert made.returncode == 0, made.stderr
    assert cli(["cache", "dir"], tmp_path).stdout.strip() == str(tmp_path / "cache")
    listed = cli(["cache", "list"], tmp_path).stdout
    assert f"| {name} | {tmp_path / 'src'} | vae | float32 | none |" in listed and " GB |" in listed
    assert "older cache layout" not in listed
    # an entry of the older layout (a DiT with a VAE and a text encoder of its own) is listed as no longer used
    shutil.copytree(fixtures / "checkpoints" / "Qwen3-Embedding-0.6B", tmp_path / "src" / "Qwen3-Embedding-0.6B")
    older = tmp_path / "cache" / "converted" / "src-0123456789ab"
    assert cli(["convert", str(tmp_path / "src"), str(older)], tmp_path).returncode == 0
    listed = cli(["cache", "list"], tmp_path).stdout
    assert "1 entry is from an older cache layout" in listed and f"cache rm {older.name}" in listed
    assert cli(["cache", "rm", older.name], tmp_path).returncode == 0
    # a marker of the wrong shape is listed with what it has; a name twice is removed once; links are never entries
    junk = tmp_path / "cache" / "converted" / "junk"
    shutil.copytree(tmp_path / "cache" / "converted" / name, junk)
    (junk / "conversion.json").write_text('{"options": "q8", "components": 3}')
    (tmp_path / "cache" / "converted" / "link").symlink_to(junk)
    listed = cli(["cache", "list"], tmp_path)
    assert listed.returncode == 0 and "| junk | ? |  | ? | ? |" in listed.stdout and "| link |" not in listed.stdout
    twice = cli(["cache", "rm", "junk", "junk"], tmp_path)
    assert twice.returncode == 0 and twice.stdout.count("removed junk") == 1, twice.stderr
    assert "no such converted entry" in cli(["cache", "rm", "link"], tmp_path).stderr
    (tmp_path / "cache" / "converted" / "link").unlink()
    (tmp_path / "cache" / "converted" / "mine").mkdir()  # not the converter's: never removed
    assert "no such converted entry" in cli(["cache", "rm", "mine"], tmp_path).stderr
    gone = cli(["cache", "rm", name], tmp_path)
    assert gone.returncode == 0 and f"removed {name}" in gone.stdout
    assert (
        not (tmp_path / "cache" / "converted" / name).exists() and (tmp_path / "cache" / "converted" / "mine").is_dir()
    )
    assert "no converted models" in cli(["cache", "list"], tmp_path).stdout


def test_an_entry_that_cannot_be_removed_whole_stays_an_entry(fixtures, tmp_path, monkeypatch):
    """The marker goes last: a removal that fails half-way leaves an entry `cache rm` can try again."""
    from helpers import copy_vae_root

    from mlx_acestep.convert import convert_checkpoints

    cache = importlib.import_module("mlx_acestep.cache")  # the module that removes entries

    entry = tmp_path / "cache" / "converted" / "src-vae-0123456789ab"
    convert_checkpoints(copy_vae_root(fixtures, tmp_path / "src"), entry)

    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache.shutil, "rmtree", refuse)
    failed = cli(["cache", "rm", entry.name, "--cache-dir", str(tmp_path / "cache")], tmp_path)
    assert_one_line_error(failed, "could not be removed (Permission denied)")
    assert (entry / "conversion.json").is_file()
    monkeypatch.undo()
    again = cli(["cache", "rm", entry.name, "--cache-dir", str(tmp_path / "cache")], tmp_path)
    assert again.exit_code == 0 and not entry.exists()


def test_dit_variants_of_one_source_share_its_vae_and_text_encoder_in_the_cache(fixtures, tmp_path):
    from mlx_acestep.hub import resolve_model

    root = str(fixtures / "checkpoints")  # only read: every conversion goes into tmp_path/cache
    resolve_model(root, cache_dir=tmp_path / "cache", lm=None)  # what a first (turbo) run converts
    done = cli(
        [
            "generate",
            "rain",
            "-m",
            root,
            "--dit",
            "acestep-v15-base",
            "--no-thinking",
            "--duration",
            "5",
            "--steps",
            "2",
            "-o",
            "base.wav",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    # the base run converted only its DiT
    assert [line.split(" into ")[0] for line in done.stderr.splitlines() if " into " in line] == [
        "converting acestep-v15-base"
    ]
    rows = [line.split(" | ") for line in cli(["cache", "list"], tmp_path).stdout.splitlines()[2:]]
    assert sorted(row[2] for row in rows) == ["Qwen3-Embedding-0.6B", "acestep-v15-base", "acestep-v15-turbo", "vae"]


def test_names_follow_each_items_seed_and_the_placeholders(converted, tmp_path):
    base = ["generate", "Soft Rain, on a tin roof!", "-m", str(converted), "--duration", "5"]
    batch = cli(base + ["--seed", "100", "--batch", "2"], tmp_path)
    assert batch.returncode == 0, batch.stderr
    assert (tmp_path / "acestep-100.wav").is_file() and (tmp_path / "acestep-101.wav").is_file()
    assert (tmp_path / "acestep-101.json").is_file() and not (tmp_path / "acestep-100_1.wav").exists()
    listed = cli(base + ["--seed", "7,9", "-o", "{caption}-{seed}-{index}.flac"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert sorted(p.name for p in tmp_path.glob("soft-rain*")) == [
        "soft-rain-on-a-tin-roof-7-0.flac",
        "soft-rain-on-a-tin-roof-7-0.json",
        "soft-rain-on-a-tin-roof-9-1.flac",
        "soft-rain-on-a-tin-roof-9-1.json",
    ]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--seed", "1,x"], "--seed 'x' is not a whole number"),
        (["--seed", "1,2", "-o", "{nope}.wav"], "unknown placeholder {nope}"),
        (["--seed", "1,2", "-o", "{date}.wav"], "gives several items the same name"),
        (["--seed", "1,1"], "--seed gives two items the same seed"),
        (["--seed", "9223372036854775807", "--batch", "2"], "+ 1 (the batch's last item) is more than 2**63 - 1"),
        (["--seed", "1,2,3", "--batch", "2"], "got 3 seeds for a batch of 2"),
    ],
)
def test_bad_names_and_seeds_are_one_line_errors(tmp_path, args, needle):
    assert_one_line_error(cli(["generate", "x", *args], tmp_path), needle)


def test_a_long_benchmark_asks_for_yes_first(tmp_path):
    import mlx.core as mx

    # fresh processes for `bench`: it runs its script in a child that writes to the process's own stdout and stderr
    done = cli(
        ["bench", "--random-weights", "--no-reference", "--cache-dir", str(tmp_path / "c")],
        tmp_path,
        fresh_process=True,
    )
    if mx.metal.is_available():  # no estimate on Metal: nothing to check here
        return
    assert done.returncode != 0 and "pass --yes to run it" in done.stderr and " h on this machine's CPU" in done.stderr
    assert not (tmp_path / "c").exists()  # asked before building anything


def test_editing_tasks_show_the_source_encoding(converted, tmp_path):
    import numpy as np

    t = np.arange(int(1.2 * 48000)) / 48000
    sf.write(str(tmp_path / "s.wav"), np.stack([np.sin(2 * np.pi * 220 * t)] * 2, 1) * 0.3, 48000)
    done = cli(
        ["generate", "jazz", "-m", str(converted), "--task", "cover", "--src-audio", "s.wav", "-o", "c.wav"], tmp_path
    )
    assert done.returncode == 0 and "encoding source" in done.stderr, done.stderr


def test_bench_clean_removes_only_its_random_weights(tmp_path):
    cache = tmp_path / "c"
    (cache / "random-weights" / "tiny-float32").mkdir(parents=True)
    (cache / "random-weights" / "tiny-float32" / "w.safetensors").write_bytes(b"x" * 1000)
    (cache / "converted").mkdir()
    done = cli(["bench", "--clean", "--cache-dir", str(cache)], tmp_path, fresh_process=True)
    assert done.returncode == 0 and "removed" in done.stdout
    assert not (cache / "random-weights").exists() and (cache / "converted").is_dir()


def test_dcw_is_on_for_turbo_by_default_recorded_and_an_older_file_replays_without_it(converted, tmp_path):
    import json

    base = ["generate", "rain on a tin roof", "-m", str(converted), "--duration", "5", "--seed", "3"]
    for name, extra in (("on", []), ("off", ["--no-dcw"])):
        done = cli([*base, *extra, "-o", f"{name}.wav"], tmp_path)
        assert done.returncode == 0, done.stderr
    on, off = (sf.read(str(tmp_path / f"{n}.wav"))[0] for n in ("on", "off"))
    assert np.abs(on - off).max() > 1e-4  # the turbo default really corrects
    meta = json.loads((tmp_path / "on.json").read_text())
    assert meta["sampler"]["dcw"] == {"mode": "double", "scaler": 0.05, "high_scaler": 0.02, "wavelet": "haar"}
    # a sidecar written before DCW existed has no "dcw" in its replay: that run had none, and its replay neither
    del meta["replay"]["dcw"]
    # nor turbo steps: a --steps given then was ignored and the shift snapped to 1, 2 or 3 (the fixed table ran), so
    # its replay runs that table: 8 steps at the snapped shift
    del meta["sampler"]["steps"]
    meta["replay"] |= {"steps": 30, "shift": 2.6}
    (tmp_path / "old.json").write_text(json.dumps(meta))
    again = cli(["generate", "--from-metadata", "old.json", "-o", "again.wav"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert (sf.read(str(tmp_path / "again.wav"))[0] == off).all()


def test_a_bad_dcw_setting_names_its_flag(converted, tmp_path):
    done = cli(["generate", "x", "-m", str(converted), "--dcw-scaler", "2", "-o", "a.wav"], tmp_path)
    assert_one_line_error(done, "--dcw-scaler must be between 0 and 1")
    assert not (tmp_path / "a.wav").exists()


def test_a_retake_records_each_items_retake_seed_and_replays_bit_for_bit(converted, tmp_path):
    import json

    base = ["generate", "rain", "-m", str(converted), "--duration", "5", "--seed", "3", "--batch", "2"]
    done = cli([*base, "--retake-variance", "0.4", "-o", "r.wav"], tmp_path)  # no --retake-seed: drawn, recorded
    assert done.returncode == 0, done.stderr
    first, second = (json.loads((tmp_path / f"r_{i}.json").read_text())["replay"] for i in (0, 1))
    assert isinstance(first["retake_seed"], int) and first["retake_seed"] != second["retake_seed"]  # one per item
    # bit for bit from a single run (a batch's items differ from single runs by float rounding in the batched DiT)
    one = cli([*base[:-2], "--retake-variance", "0.4", "--retake-seed", "9", "-o", "one.wav"], tmp_path)
    assert one.returncode == 0, one.stderr
    assert json.loads((tmp_path / "one.json").read_text())["replay"]["retake_seed"] == 9
    again = cli(["generate", "--from-metadata", "one.json", "-o", "again.wav"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert (sf.read(str(tmp_path / "again.wav"))[0] == sf.read(str(tmp_path / "one.wav"))[0]).all()
    plain = cli([*base[:-2], "-o", "plain.wav"], tmp_path)
    assert (
        plain.returncode == 0
        and not (sf.read(str(tmp_path / "plain.wav"))[0] == sf.read(str(tmp_path / "one.wav"))[0]).all()
    )
    bad = cli([*base, "--retake-variance", "1.5", "-o", "x.wav"], tmp_path)
    assert_one_line_error(bad, "--retake-variance must be between 0 and 1")


def test_heun_with_the_velocity_stabilisers_runs_from_the_cli_and_is_recorded(converted, tmp_path):
    import json

    base = ["generate", "rain", "-m", str(converted), "--duration", "5", "--seed", "3", "--no-dcw"]
    done = cli([*base, "--sampler", "heun", "--velocity-ema-factor", "0.2", "-o", "h.wav"], tmp_path)
    assert done.returncode == 0, done.stderr
    replay = json.loads((tmp_path / "h.json").read_text())["replay"]
    assert (replay["sampler"], replay["velocity_ema_factor"]) == ("heun", 0.2)
    plain = cli([*base, "-o", "e.wav"], tmp_path)
    assert (
        plain.returncode == 0 and not (sf.read(str(tmp_path / "h.wav"))[0] == sf.read(str(tmp_path / "e.wav"))[0]).all()
    )


def test_base_models_take_heun_and_the_velocity_stabilisers(converted, tmp_path):
    """Refused on base/SFT until upstream's base loop had goldens of its own (tests/parity/test_upstream_base.py)."""
    import json

    flags = ["--sampler", "heun", "--velocity-norm-threshold", "0.4", "--velocity-ema-factor", "0.2", "--dcw"]
    run = ["generate", "rain", "-m", str(converted), "--dit", "acestep-v15-base", "--steps", "2", "--duration", "5"]
    done = cli([*run, "--no-thinking", "--seed", "3", *flags, "-o", "b.wav"], tmp_path)
    assert done.returncode == 0, done.stderr
    replay = json.loads((tmp_path / "b.json").read_text())["replay"]
    assert (replay["sampler"], replay["velocity_norm_threshold"], replay["dcw"]) == ("heun", 0.4, True)


def test_every_newer_sampler_flag_reaches_the_request():
    """A flag declared in sampler_options but missing from SAMPLER_FIELDS would be parsed and then dropped."""
    import click

    from mlx_acestep.cli.sampler_options import SAMPLER_FIELDS, upstream_sampler_options
    from mlx_acestep.pipeline.request import GenerationRequest

    declared = {p.name for p in upstream_sampler_options(click.command()(lambda **kw: None)).params}
    assert declared - {"retake_seed", "timesteps"} == set(SAMPLER_FIELDS)
    assert set(SAMPLER_FIELDS) <= set(GenerationRequest.__dataclass_fields__)


def test_the_wav_comment_limit_is_libsndfiles(tmp_path):
    """A longer WAV comment is dropped whole by libsndfile, silently: the tags are held to what it keeps."""
    from mlx_acestep.cli.metadata import WAV_COMMENT_LIMIT

    for n, kept in ((WAV_COMMENT_LIMIT, True), (WAV_COMMENT_LIMIT + 1, False)):
        with sf.SoundFile(str(tmp_path / "t.wav"), "w", 48000, 2) as f:
            f.comment = "x" * n
            f.write(np.zeros((10, 2)))
        assert (sf.SoundFile(str(tmp_path / "t.wav")).comment == "x" * n) is kept


def test_a_wav_too_small_for_its_settings_names_its_sidecar_and_replays_through_it(converted, tmp_path):
    import json

    lyrics = "[verse]\n" + "la la la la la la la la\n" * 120  # ~3 kB: no WAV comment holds it
    done = cli(["generate", "rain", "-m", str(converted), "--duration", "5", "--seed", "2", "--lyrics", lyrics, "-o",
                "a.wav"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    tag = json.loads(sf.SoundFile(str(tmp_path / "a.wav")).comment)
    assert tag["sidecar"] == "a.json" and tag["seed"] == 2
    again = cli(["generate", "--from-metadata", "a.wav", "-o", "b.wav"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert (sf.read(str(tmp_path / "a.wav"))[0] == sf.read(str(tmp_path / "b.wav"))[0]).all()
    (tmp_path / "a.json").unlink()
    lost = cli(["generate", "--from-metadata", "a.wav", "-o", "c.wav"], tmp_path)
    assert_one_line_error(lost, "a.wav: its settings are in 'a.json', which is not beside it")
