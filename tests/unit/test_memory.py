"""The memory policy (pipeline/memory.py): the VAE's window by memory, the run's limits, windows that do not move
the output."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_acestep.errors import AceStepError
from mlx_acestep.limits import VAE_CHUNK, VAE_CLEAR_EVERY
from mlx_acestep.models.vae.windows import plan_windows
from mlx_acestep.pipeline import fit, memory
from mlx_acestep.pipeline.memory import GB, Device, default_vae_window, run_limits, vae_window


# upstream's own cases (gpu_config_test.py:39-52; the rule: gpu_config.py:802-810) and the edges between them
@pytest.mark.parametrize(
    "gb,frames", [(8, 256), (16, 256), (16.5, 512), (36, 512), (48, 1024), (64, 1024), (64.5, 2048), (128, 2048)]
)
def test_the_vae_window_follows_upstreams_rule_by_memory(gb, frames):
    assert vae_window(gb) == frames


def test_the_window_is_by_memory_on_metal_only():
    assert default_vae_window(Device(48 * GB, 36 * GB, metal=True)) == 1024  # the 48 GB Mac of the issue
    assert default_vae_window(Device(512 * GB, 512 * GB, metal=False)) == VAE_CHUNK  # a CPU keeps its window


class Calls:
    """mx's limit setters, recorded: each returns the previous value as MLX does."""

    def __init__(self, monkeypatch):
        self.log, self.values = [], {"cache": 111, "wired": 222}
        for name in ("cache", "wired"):
            monkeypatch.setattr(mx, f"set_{name}_limit", self.setter(name))

    def setter(self, name):
        def set_limit(value):
            self.log.append((name, value))
            previous, self.values[name] = self.values[name], value
            return previous

        return set_limit


def test_a_run_on_metal_wires_the_working_set_and_bounds_the_cache_then_restores_both(monkeypatch):
    calls = Calls(monkeypatch)
    monkeypatch.setattr(mx, "synchronize", lambda *a: calls.log.append(("sync", None)))
    with run_limits(2 * GB, Device(16 * GB, 11 * GB, metal=True)):
        assert calls.values == {"cache": 2 * GB, "wired": 11 * GB}
    assert calls.values == {"cache": 111, "wired": 222}
    assert calls.log == [("cache", 2 * GB), ("wired", 11 * GB), ("sync", None), ("wired", 222), ("cache", 111)]


def test_off_metal_a_run_only_bounds_the_cache_and_restores_it_after_an_error(monkeypatch):
    calls = Calls(monkeypatch)
    with pytest.raises(RuntimeError), run_limits(2 * GB, Device(16 * GB, 16 * GB, metal=False)):
        raise RuntimeError("a failed run")
    assert calls.log == [("cache", 2 * GB), ("cache", 111)]


def test_the_pipeline_runs_under_the_limits(monkeypatch, converted):
    from test_pipeline import folders

    from mlx_acestep.pipeline import ACEStep

    seen = []
    real = memory.run_limits

    def spy(limit, dev=None):
        seen.append(limit)
        return real(limit, dev)

    monkeypatch.setattr("mlx_acestep.pipeline.acestep.run_limits", spy)
    pipe = ACEStep(folders(converted), cache_limit_gb=1.0)
    assert pipe.vae_chunk == default_vae_window()
    pipe.generate("piano", duration=10, seed=1, thinking=False)
    assert seen and set(seen) == {GB}


def test_windows_of_two_sizes_decode_the_same_song_and_clear_the_cache_every_few(load_converted, monkeypatch):
    vae = load_converted("vae")
    z = mx.array(np.random.default_rng(3).standard_normal((1, 90, 64)).astype(np.float32))
    large = np.array(vae.decode_chunked(z, chunk=80, overlap=12))
    clears = []
    monkeypatch.setattr(mx, "clear_cache", lambda: clears.append(1))
    small = np.array(vae.decode_chunked(z, chunk=40, overlap=12))
    # the overlap covers the decoder's reach, so the window size is not in the output: the same bits
    np.testing.assert_array_equal(small, large)
    windows = len(plan_windows(90, 40, 12))
    assert windows > VAE_CLEAR_EVERY  # a long song: cleared between windows, and once at the end
    assert len(clears) == windows // VAE_CLEAR_EVERY + 1


# -- the fit check (pipeline/fit.py), on a faked small device ------------------------------------------------------


@pytest.fixture(scope="module")
def kept(converted):
    from test_pipeline import folders

    from mlx_acestep.pipeline import ACEStep

    return ACEStep(folders(converted), keep_loaded=True)


def small_device(monkeypatch, allowed):
    dev = Device(allowed, allowed, metal=False)
    monkeypatch.setattr(fit, "device", lambda: dev)
    return dev


def run_of(pipe, **fields):
    from mlx_acestep.pipeline.request import GenerationRequest

    request = GenerationRequest(caption="piano", thinking=False, **fields)
    return fit.planned_run(pipe, request, False, request.duration, pipe.sampler_settings())


def refusal(pipe, **fields) -> str:
    with pytest.raises(AceStepError) as e:
        pipe.generate("piano", thinking=False, seed=1, **fields)
    message = str(e.value)
    assert "\n" not in message and "needs about" in message and message.endswith("(--force to try anyway)")
    return message


def test_a_run_that_cannot_fit_fails_in_one_line_before_anything_loads(kept, monkeypatch):
    small_device(monkeypatch, 30 * 2**20)
    kept.unload()
    message = refusal(kept, duration=30)
    assert "the device allows 30.0 MiB" in message and "nothing smaller fits either" in message
    assert kept.resident() == []  # refused before loading


def test_the_refusal_names_what_would_fit(kept, monkeypatch):
    def need(**fields):
        return fit.estimate(kept, run_of(kept, **fields), Device(0, 0, False))[0]

    assert need(duration=30, batch_size=1) < need(duration=30, batch_size=2)  # the check can tell them apart
    small_device(monkeypatch, need(duration=30, batch_size=1))
    assert "what would fit: --batch 1, --duration 10 or less" in refusal(kept, duration=30, batch_size=2)
    small_device(monkeypatch, need(duration=20) + 1)
    assert "what would fit: --duration 20 or less" in refusal(kept, duration=60)
    # a float32 DiT kept loaded: q8 shrinks its weights about 4x
    run = run_of(kept, duration=30)
    q8 = fit.replace(run, weights={**run.weights, "dit": run.weights["dit"] * 17 // 64})
    small_device(monkeypatch, fit.estimate(kept, q8, Device(0, 0, False))[0] + 1)
    assert "what would fit: --quantize q8" in refusal(kept, duration=30)


def test_check_memory_off_runs_what_the_estimate_refuses(converted, monkeypatch):
    from test_pipeline import folders

    from mlx_acestep.pipeline import ACEStep

    small_device(monkeypatch, 2**20)
    result = ACEStep(folders(converted), check_memory=False).generate("piano", duration=5, seed=1, thinking=False)
    assert result.audio.shape[0] == 1


@pytest.mark.parametrize("seconds,batch", [(30, 1), (40, 2)])
def test_the_estimate_is_not_below_the_measured_peak(kept, seconds, batch):
    # MLX's own peak over the run's phases (weights included: they are kept loaded) on the fixture model; the
    # estimate may err high (about 1.6-1.7x here), never low, or the check would pass a run that dies.
    # MLX's peak is the process's: what other tests of this worker still hold (session caches, garbage) is
    # measured before the run, with this pipeline's own weights unloaded so that the run's peak counts them.
    import gc

    import mlx.core as mx

    kept.unload()
    gc.collect()
    foreign = mx.get_active_memory()
    result = kept.generate("piano", duration=seconds, batch_size=batch, seed=1, thinking=False)
    need = fit.estimate(kept, run_of(kept, duration=seconds, batch_size=batch), memory.device())[0]
    peak = max(result.peak_memory.values()) - foreign
    print(f"estimate {need / 2**20:.1f} MB, measured peak {peak / 2**20:.1f} MB, others' {foreign / 2**20:.1f} MB")
    assert peak <= need <= 3 * peak


def test_a_length_the_planner_chooses_is_checked_before_the_dit_loads(converted, monkeypatch):
    from test_pipeline import folders

    from mlx_acestep.hub import ModelFolders
    from mlx_acestep.pipeline import ACEStep, prepare

    pipe = ACEStep(ModelFolders(**vars(folders(converted)) | {"lm": converted / "acestep-5Hz-lm-0.6B"}))
    checked = []

    def spy(_pipe, run, dev=None):
        checked.append((run.seconds, pipe.resident()))
        raise AceStepError("refused")

    monkeypatch.setattr(prepare, "check_fit", spy)
    with pytest.raises(AceStepError, match="refused"):
        pipe.generate("gentle piano", seed=3)  # thinking, no duration: the planner picks it
    [(seconds, resident)] = checked
    assert seconds >= 10 and "dit" not in resident and "vae" not in resident
