"""The training step (`training/step.py`): gradient accumulation against one larger batch, the compiled step
against the eager one, and the run that stops when asked (the first Ctrl-C of `mlx-acestep train`)."""

import json
import signal
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from test_dit import dit_inputs

from mlx_acestep.compiling import use_compiled
from mlx_acestep.loading import load_component
from mlx_acestep.training import TrainConfig
from mlx_acestep.training.lora import attach_lora, seed_dropout
from mlx_acestep.training.objective import flow_loss
from mlx_acestep.training.step import TrainStep


def _decoder(converted, dropout=0.0):
    """The fixture's DiT decoder with a rank-4 LoRA whose B is non-zero (so every factor has a gradient)."""
    decoder = load_component(converted / "acestep-v15-turbo", "dit").decoder
    decoder.checkpointing = True
    deltas = attach_lora(decoder, ("self", "cross"), rank=4, alpha=8.0, dropout=dropout, key=mx.random.key(3))
    rng = np.random.default_rng(4)
    for d in deltas.values():
        d.up = mx.array(rng.standard_normal(d.up.shape).astype(np.float32) * 0.1)
    return decoder, deltas


def _batch(converted, rows: int, seed: int):
    config = json.loads((converted / "acestep-v15-turbo" / "config.json").read_text())
    x0, _, context, states = dit_inputs(config, length=18, seed=seed)  # two rows, conditions of equal length
    rng = np.random.default_rng(seed + 1)
    x0, context, states = (np.concatenate([a] * (rows // 2)) for a in (x0, context, states))
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = rng.uniform(0.1, 0.9, rows).astype(np.float32)
    return tuple(mx.array(a) for a in (x0, noise, t, context, states))


def _flat(decoder) -> np.ndarray:
    return np.concatenate([np.array(v).ravel() for _, v in nn.utils.tree_flatten(decoder.trainable_parameters())])


@pytest.mark.parametrize("compiled", [False, True])
def test_two_micro_batches_make_the_update_of_one_batch_twice_as_large(converted, compiled):
    """--grad-accum 2 of one clip each, and one micro-batch of both clips, against the update computed here from
    the whole batch's gradient: the loss is a mean over equal-sized micro-batches, so the step's loss and its
    (clipped) gradient must be the batch's. Plain SGD, so the move is the gradient itself (Adam's first step is
    about lr·sign(g) and would hide a factor of two)."""
    whole = _batch(converted, 2, seed=5)
    decoder, _ = _decoder(converted)
    direct_loss, direct = nn.value_and_grad(decoder, flow_loss)(decoder, *whole)
    direct = np.concatenate([np.array(g).ravel() for _, g in nn.utils.tree_flatten(direct)])
    clip, lr = 0.5, 1e-2
    want = -lr * direct * min(1.0, clip / np.linalg.norm(direct))  # optim.clip_grad_norm's rule
    halves = [tuple(a[i : i + 1] for a in whole) for i in range(2)]
    for accum, batches in ((1, [whole]), (2, halves)):
        decoder, _ = _decoder(converted)
        before = _flat(decoder)
        config = TrainConfig(rank=4, grad_accum=accum, grad_clip=clip, lr=lr)
        with use_compiled(compiled):
            step = TrainStep(decoder, optim.SGD(learning_rate=lr), config)
            loss, grads = step.gradients(iter(batches))
            assert step.update(0, grads, loss.item()) == pytest.approx(direct_loss.item(), rel=1e-6)
        # the move is read back as (p + move) - p in float32: measured within 2 ulps of the largest parameter;
        # a sum instead of the mean, or a missed clip, is off by the move itself (~1e-5, ~1000 ulps)
        ulp = np.finfo(np.float32).eps * np.abs(before).max()
        np.testing.assert_allclose(_flat(decoder) - before, want, rtol=0, atol=4 * ulp)


def test_the_compiled_training_step_equals_the_eager_one_with_fresh_dropout_masks(converted):
    """Three steps of two micro-batches with dropout 0.3: each micro-batch sets its own dropout keys, and the
    compiled step must read them (a key baked in at trace time would train on one mask throughout)."""
    batches = [_batch(converted, 2, seed=s) for s in (5, 9, 13)]
    results = {}
    for compiled in (False, True):
        decoder, deltas = _decoder(converted, dropout=0.3)
        config = TrainConfig(rank=4, grad_accum=2, lr=1e-3)
        with use_compiled(compiled):
            step = TrainStep(decoder, optim.AdamW(learning_rate=config.lr), config)
            for k, batch in enumerate(batches):

                def micro(k=k, batch=batch):
                    for j in range(2):
                        seed_dropout(deltas, 100 * k + j)
                        yield tuple(a[j : j + 1] for a in batch)

                loss, grads = step.gradients(micro())
                step.update(k, grads, loss.item())
        results[compiled] = _flat(decoder)
    # measured: bit for bit on MLX 0.32 (CPU); the tolerance allows a fused kernel's different rounding
    np.testing.assert_allclose(results[True], results[False], rtol=1e-5, atol=1e-7)


def test_the_compiled_dit_step_equals_the_eager_one(converted):
    from mlx_acestep.diffusion.loop import Denoiser

    config = json.loads((converted / "acestep-v15-turbo" / "config.json").read_text())
    dit = load_component(converted / "acestep-v15-turbo", "dit").decoder
    x0, _, context, states = (mx.array(a) for a in dit_inputs(config, length=18, seed=3))
    out = {}
    for compiled in (False, True):
        with use_compiled(compiled):
            denoiser = Denoiser(dit, states, context)
            out[compiled] = [np.array(denoiser(x0, t)) for t in (1.0, 0.5)] + [
                np.array(denoiser(x0[:1], 0.5, slice(0, 1)))
            ]
    for got, want in zip(out[True], out[False]):
        np.testing.assert_array_equal(got, want)  # measured bit for bit: the same kernels, one graph


def test_the_first_ctrl_c_of_training_asks_for_a_stop_and_the_second_stops_at_once():
    from mlx_acestep.cli.train import _stop_on_first_interrupt

    bars = SimpleNamespace(training=False)
    with _stop_on_first_interrupt(bars) as stop:
        with pytest.raises(KeyboardInterrupt):  # while preprocessing there is no step to finish: at once
            signal.raise_signal(signal.SIGINT)
        bars.training = True
        signal.raise_signal(signal.SIGINT)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_an_error_inside_the_compiled_dit_step_leaves_the_decoder_whole(converted):
    """A trace that raises leaves MLX's placeholders in the module's weights (a server keeps its decoder loaded)."""
    from mlx_acestep.diffusion.loop import Denoiser

    config = json.loads((converted / "acestep-v15-turbo" / "config.json").read_text())
    dit = load_component(converted / "acestep-v15-turbo", "dit").decoder
    x0, _, context, states = (mx.array(a) for a in dit_inputs(config, length=18, seed=3))
    want = np.array(Denoiser(dit, states, context)(x0, 0.5))
    with use_compiled(True):
        with pytest.raises(ValueError):
            Denoiser(dit, states, context)(x0[..., :5], 0.5)  # a latent of the wrong width fails inside the trace
    np.testing.assert_array_equal(np.array(Denoiser(dit, states, context)(x0, 0.5)), want)


def test_a_decoder_with_a_dora_adapter_runs_the_dit_step_eager_and_stays_whole(converted):
    """DoRA's row gain is cached by evaluating it, which a trace cannot: with the compiled DiT step forced on (a
    GPU's default), a DoRA decoder must still give the eager result, and still work after."""
    from pathlib import Path

    from mlx_acestep.adapters import Adapter, AdapterStack, targets
    from mlx_acestep.adapters.deltas import LoRADelta
    from mlx_acestep.diffusion.loop import Denoiser

    config = json.loads((converted / "acestep-v15-turbo" / "config.json").read_text())
    dit = load_component(converted / "acestep-v15-turbo", "dit").decoder
    rng = np.random.default_rng(8)
    deltas = {
        path: LoRADelta(
            mx.array(rng.standard_normal((2, inp)).astype(np.float32) * 0.1),
            mx.array(rng.standard_normal((out, 2)).astype(np.float32) * 0.1),
            1.0,
            mx.array(rng.uniform(0.5, 2.0, out).astype(np.float32)),
        )
        for path, (out, inp) in targets(dit).items()
        if ".self_attn." in path
    }
    stack = AdapterStack()
    stack.add_adapter(Adapter("dora", Path("dora"), "peft", deltas))
    stack.apply(dit)
    x0, _, context, states = (mx.array(a) for a in dit_inputs(config, length=18, seed=3))
    want = np.array(Denoiser(dit, states, context)(x0, 0.5))
    with use_compiled(True):
        got = np.array(Denoiser(dit, states, context)(x0, 0.5))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.array(Denoiser(dit, states, context)(x0, 0.5)), want)
