"""Across ranks with MLX's own distributed engine, on loopback with the ring backend (two processes on this
machine): a two-rank training step against a one-rank step over the same global batch, the preprocessing split and
exchanged, a resume at another world size, a killed rank, and a two-rank batch rendering against one rank's files.

The ranks are started as `mlx.launch` starts them (MLX_RANK and MLX_HOSTFILE), by hand where a test needs each
rank's own environment or process, through `mlx.launch` itself where the README's command is what is checked."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import run_cli
from safetensors.numpy import load_file

from mlx_acestep.training import TrainConfig, train_lora

# One worker: the tests share one preprocessing of the clips (the fixture VAE is slow on a CPU).
pytestmark = pytest.mark.xdist_group("distributed")

LIMIT = 150  # seconds a launch may take before the test calls it a hang (a run takes ~10-20 s)
TRAIN = dict(rank=4, alpha=8.0, grad_accum=2, crop_seconds=5, warmup=1, lr=1e-3)  # dropout on: seeded per micro-batch


def train_flags(config: dict, steps: int) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in config.items()]
    return [*flags, f"--steps={steps}"]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_ranks(args, folder: Path, envs: list[dict]) -> list[subprocess.Popen]:
    """`python -m mlx_acestep.cli ARGS` as ranks 0..n-1 of a ring on loopback, each with its own environment; their
    output goes to files (a pipe nobody reads while a rank runs would fill and stop it)."""
    hostfile = folder / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(len(envs))]))
    procs = []
    for rank, env in enumerate(envs):
        with open(folder / f"rank{rank}.out", "w") as stdout, open(folder / f"rank{rank}.err", "w") as stderr:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "mlx_acestep.cli", *map(str, args)],
                    cwd=folder,
                    env={**os.environ, **env, "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)},
                    stdout=stdout,
                    stderr=stderr,
                )
            )
        procs[-1].logs = folder / f"rank{rank}"
    return procs


def finish(procs) -> list[tuple[int, str, str]]:
    """Each rank's exit code, stdout and stderr; a rank still running after LIMIT fails the test (a hang)."""
    out = []
    for p in procs:
        try:
            p.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"rank {procs.index(p)} still running after {LIMIT} s: a hang")
        out.append((p.returncode, Path(f"{p.logs}.out").read_text(), Path(f"{p.logs}.err").read_text()))
    return out


def write_song(path: Path, seconds: float, freq: float, caption: str) -> None:
    t = np.arange(int(seconds * 48000)) / 48000
    wave = 0.4 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    sf.write(str(path), np.stack([wave, np.roll(wave, 100)], 1).astype(np.float32), 48000)
    path.with_suffix(".txt").write_text(caption)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("songs")
    write_song(folder / "a.wav", 5.2, 220, "a slow sine drone")
    write_song(folder / "b.wav", 5.2, 330, "a bright sine line")
    return folder


@pytest.fixture(scope="module")
def one_rank(converted, dataset, tmp_path_factory):
    """The one-rank run the two-rank one must equal: its adapter after step 1 and after a resumed step 2, and the
    cache its preprocessing filled."""
    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("one") / "style"
    train_lora(dataset, out, TrainConfig(**TRAIN, steps=1), model=converted, cache_dir=cache)
    first = load_file(str(out / "adapter_model.safetensors"))
    train_lora(dataset, out, TrainConfig(**TRAIN, steps=2), model=converted, cache_dir=cache, resume=True)
    return {"cache": cache, 1: first, 2: load_file(str(out / "adapter_model.safetensors"))}


def worst_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)) for k in a)


def test_two_ranks_train_the_step_one_rank_trains_and_resume_it(converted, dataset, one_rank, tmp_path):
    """Each rank with a cache of its own (two Macs) holding one of the clips: each sends its clip to the other;
    the step's two micro-batches are one per rank, their gradients averaged. Then the two resume the run (the
    killed-rank test resumes a two-rank run on one)."""
    caches = [tmp_path / "cache0", tmp_path / "cache1"]
    reference = sorted((one_rank["cache"] / "preprocessed").iterdir())
    for cache, clip in zip(caches, reference):
        (cache / "preprocessed").mkdir(parents=True)
        shutil.copy(clip, cache / "preprocessed" / clip.name)
    args = ["train", dataset, "-o", tmp_path / "style", "--model", converted, *train_flags(TRAIN, 1)]
    done = finish(start_ranks(args, tmp_path, [{"MLX_ACESTEP_CACHE": str(c)} for c in caches]))
    assert [code for code, _, _ in done] == [0, 0], done
    assert "effective batch 2 clips per step (2 micro-batches of 1; 1 per rank on 2 ranks)" in done[0][2]
    assert "wrote" in done[0][1] and not done[1][1] + done[1][2]  # rank 0 reports; rank 1 says nothing
    # every rank holds every clip, bytes as one rank encoded them (a float sum with zeros is exact)
    for cache in caches:
        got = sorted((cache / "preprocessed").iterdir())
        assert [p.name for p in got] == [p.name for p in reference]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(got, reference))
    two = load_file(str(tmp_path / "style" / "adapter_model.safetensors"))
    # measured 0.0 here (the two-rank mean (g0 + g1) / 2 is the one-rank one, op for op); float32 rounding allowed
    assert worst_difference(two, one_rank[1]) <= 1e-6
    # resumed on two ranks: rank 0 reads the checkpoint and sends it (the optimizer state read from a file names its
    # arrays in another order than the one rank 1 builds: they are matched by name)
    done = finish(
        start_ranks([*args[:-1], "--steps=2", "--resume"], tmp_path, [{"MLX_ACESTEP_CACHE": str(c)} for c in caches])
    )
    assert [code for code, _, _ in done] == [0, 0], done
    assert worst_difference(load_file(str(tmp_path / "style" / "adapter_model.safetensors")), one_rank[2]) <= 1e-6


def test_a_killed_rank_ends_the_other_with_one_line_and_the_checkpoint_is_intact(
    converted, dataset, one_rank, tmp_path
):
    out = tmp_path / "style"
    args = ["train", dataset, "-o", out, "--model", converted, *train_flags(TRAIN, 500), "--save-every=1"]
    # the ring raises on rank 0, or (a race in MLX's ring) leaves it waiting: then the patience ends it
    env = {"MLX_ACESTEP_CACHE": str(one_rank["cache"]), "MLX_ACESTEP_RANK_PATIENCE": "10"}
    procs = start_ranks(args, tmp_path, [env] * 2)
    deadline = time.monotonic() + LIMIT
    while not (out / "checkpoint" / "step.json").is_file():
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), finish(procs)
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    (code, stdout, stderr), _ = finish(procs)
    ours = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert code == 1 and "Traceback" not in stderr and len(ours) == 1, stderr
    assert ours[0].startswith("Error: rank 0 of 2: ") and ours[0].endswith("--resume continues from it"), ours
    assert "lost another rank while training step" in ours[0] or "no answer from the other ranks for 10 s" in ours[0]
    step = json.loads((out / "checkpoint" / "step.json").read_text())["step"]
    assert 1 <= step < 500 and not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing half-written
    # intact: one rank resumes from it and takes one more step
    resumed = TrainConfig(**TRAIN, steps=step + 1)
    train_lora(dataset, out, resumed, model=converted, cache_dir=one_rank["cache"], resume=True)
    logged = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, step + 2))


def test_two_ranks_render_the_files_one_rank_writes(converted, tmp_path):
    """`mlx.launch --backend ring -n 2 ... generate --batch 2`, as the README prints it: one item per rank, each
    planned by the LM (prompts of different lengths, padded as the whole batch)."""
    flags = ["generate", "a sine", "--model", converted, "--duration", "10", "--batch", "2", "--seed", "5"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = run_cli([*flags, "-o", "song.wav"], tmp_path / "one")
    assert single.returncode == 0, single.output
    launcher = Path(sys.executable).with_name("mlx.launch")
    port = str(free_ports(1)[0])
    command = [launcher, "--backend", "ring", "-n", "2", "--starting-port", port, "--", sys.executable, "-m"]
    done = subprocess.run(
        [*map(str, command), "mlx_acestep.cli", *map(str, flags), "-o", "song.wav"],
        cwd=tmp_path / "two",
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("wrote song_") == 2  # rank 0 reports, once
    one, two = sorted((tmp_path / "one").iterdir()), sorted((tmp_path / "two").iterdir())
    assert (
        [p.name for p in two] == [p.name for p in one] == [f"song_{i}.{x}" for i in range(2) for x in ("json", "wav")]
    )
    for a, b in zip(one, two):
        if a.suffix == ".json":
            assert a.read_bytes() == b.read_bytes(), a.name  # the same seeds, plans, settings
            continue
        x, y = sf.read(str(a), dtype="int16")[0], sf.read(str(b), dtype="int16")[0]
        # 16-bit PCM within one step: a block of 1 item rounds float32 sums unlike the batch of 2 (BLAS blocking
        # by batch size); a wrong seed, plan or padding changes every sample (measured: ~0.6% differ by 1)
        diff = np.abs(x.astype(np.int32) - y.astype(np.int32))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05, (a.name, diff.max(), (diff > 0).mean())


# -- the shares, without processes: a fake two-rank world ----------------------------------------------------


@pytest.mark.parametrize(
    "count, ranks, want",
    [(3, 2, [[0, 1], [2]]), (8, 2, [[0, 1, 2, 3], [4, 5, 6, 7]]), (1, 2, [[0], []]), (5, 3, [[0, 1], [2, 3], [4]])],
)
def test_each_rank_renders_a_block_and_the_blocks_are_the_batch_in_order(count, ranks, want):
    from mlx_acestep.distributed import block

    assert [list(block(count, ranks, r)) for r in range(ranks)] == want


def test_the_clips_no_rank_has_are_split_and_each_rank_sends_the_ones_it_has(monkeypatch, tmp_path):
    from mlx_acestep import distributed
    from mlx_acestep.training import preprocess

    lacking = [[0, 1, 2, 3], [1, 2, 3]]  # rank 1 has clip 0 cached: nobody encodes it again
    monkeypatch.setattr(distributed, "size", lambda: 2)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(distributed, "gather_json", lambda value: lacking)
        shares.append(preprocess._my_share(lacking[rank]))
    assert shares == [[1, 3], [2]]


def test_what_rank_0_refuses_stops_every_rank_with_its_line(monkeypatch):
    """The run's folder is rank 0's: it checks it, and the others stop with its reason instead of waiting."""
    from mlx_acestep import distributed
    from mlx_acestep.errors import AceStepError

    monkeypatch.setattr(distributed, "size", lambda: 2)
    monkeypatch.setattr(distributed, "_start_watcher", lambda: None)
    sent, raised = [], []

    def refuse():
        raise AceStepError("out: exists and is not empty")

    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        # every rank gets back what rank 0 put in (rank 1 never runs `refuse`)
        monkeypatch.setattr(distributed, "gather_json", lambda value: [(sent.append(value) or sent)[0]] * 2)
        with pytest.raises(AceStepError) as error:
            distributed.on_leader(refuse if rank == 0 else None)
        raised.append(str(error.value))
    assert sent[0] == {"error": "out: exists and is not empty"}
    assert raised == ["out: exists and is not empty", "rank 0 stopped the run: out: exists and is not empty"]


def test_a_world_size_that_does_not_divide_the_micro_batches_is_refused_with_why():
    from mlx_acestep.errors import AceStepError
    from mlx_acestep.training.parallel import check_world

    check_world(TrainConfig(grad_accum=4), 2)
    with pytest.raises(AceStepError, match="3 ranks cannot share a step of --grad-accum 4: each rank takes whole"):
        check_world(TrainConfig(grad_accum=4), 3)
