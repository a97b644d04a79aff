"""Several processes as one run, through MLX's own distributed engine (`mx.distributed`: ring over TCP or
Thunderbolt, MPI, JACCL), started by `mlx.launch`. Without a launcher the group has one rank and every helper here
is the identity, so the single-machine path is the same code.

The rule every caller keeps: all ranks run the same collectives in the same order (a rank that skips one leaves the
others waiting). A peer that dies makes the ring raise on the survivors; `collective` turns that into one line."""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import socket
import threading
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import mlx.core as mx
import numpy as np

from .errors import AceStepError, first_line


@functools.cache
def world():
    """The process group `mlx.launch` set up (one rank without it)."""
    return mx.distributed.init()


def rank() -> int:
    return world().rank()


def size() -> int:
    return world().size()


def is_leader() -> bool:
    """Rank 0: the one that writes files and reports."""
    return rank() == 0


def block(count: int, of: int | None = None, at: int | None = None) -> range:
    """The items of `count` that rank `at` of `of` takes: contiguous, the first ranks one more when uneven, so
    gathering in rank order gives back the items in order."""
    of, at = size() if of is None else of, rank() if at is None else at
    share, extra = divmod(count, of)
    start = at * share + min(at, extra)
    return range(start, start + share + (at < extra))


class RankLost(AceStepError):
    """Another rank died or was stopped: this one cannot go on."""


@contextmanager
def stop_on_sigterm(what: str):
    """A SIGTERM (what `mlx.launch` sends the other ranks when one fails) ends this rank with one line, not in
    silence; an exception, so what was being written is cleaned up as for any failure."""
    if size() == 1 or threading.current_thread() is not threading.main_thread():  # handlers live on the main one
        yield
        return

    def stopped(signum, frame):
        raise RankLost(f"rank {rank()} of {size()}: stopped while {what} (another rank ended)")

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def collective(what: str, patience: float | None = None, then: str = ""):
    """Runs a step that talks to the other ranks: a lost peer (the ring raises; MPI aborts the job itself) is a
    one-line error naming this rank, as is a SIGTERM meanwhile. `patience`: seconds after which a wait counts as
    a lost rank (see `_watcher`); `then` ends the error line if the watcher has to end the process."""
    if size() == 1:
        yield
        return
    _start_watcher()
    previous = dict(_waiting)
    _waiting.update(what=what, since=time.monotonic(), patience=patience, then=then)
    try:
        with stop_on_sigterm(what):
            try:
                yield
            except RuntimeError as e:
                raise RankLost(f"rank {rank()} of {size()}: lost another rank while {what} ({first_line(e)})") from None
    finally:
        _waiting.clear()
        _waiting.update(previous)


# A rank blocked inside a collective is in MLX's C++ code, where Python runs no signal handler; and the ring does
# not always fail a collective begun after its peer was lost (MLX 0.32 on loopback: a race, seen in about one run
# in two when a rank is killed between steps). So a watcher thread ends such a rank, printing the one line itself:
# on a SIGTERM (mlx.launch's way of stopping the others when one fails), or when a wait outlasts its patience.
PATIENCE_ENV = "MLX_ACESTEP_RANK_PATIENCE"
DEFAULT_PATIENCE = 300.0  # seconds: a training step's wait includes rank 0's checkpoint and preview
_waiting: dict = {}


def step_patience() -> float:
    try:
        return float(os.environ.get(PATIENCE_ENV, DEFAULT_PATIENCE))
    except ValueError:
        raise AceStepError(f"{PATIENCE_ENV}={os.environ[PATIENCE_ENV]!r} is not a number of seconds") from None


_watching: list[threading.Thread] = []  # the watcher, once started (on the main thread only)


def _start_watcher() -> None:
    if _watching or threading.current_thread() is not threading.main_thread():
        return  # the wakeup fd is the main thread's to set; a worker's collectives rely on the ring raising
    wake, signals = socket.socketpair()
    wake.setblocking(False)
    signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)
    _watching.append(
        threading.Thread(target=_watcher, args=(signals, wake), daemon=True, name="mlx-acestep rank watch")
    )
    _watching[0].start()


def _watcher(signals: socket.socket, wake: socket.socket) -> None:
    terminated = False
    while True:
        if select.select([signals], [], [], 1.0)[0]:
            terminated = terminated or signal.SIGTERM in signals.recv(64)
        what, since, patience = _waiting.get("what"), _waiting.get("since", 0.0), _waiting.get("patience")
        if what is None:
            continue
        waited = time.monotonic() - since
        if terminated and waited > 1.0:  # the main thread had a second to raise it itself
            _end(f"stopped while {what} (another rank ended)")
        if patience is not None and waited > patience:
            _end(f"no answer from the other ranks for {patience:g} s while {what} (a rank died?)")


def _end(message: str) -> None:
    os.write(2, f"\nError: rank {rank()} of {size()}: {message}{_waiting.get('then', '')}\n".encode())
    os._exit(1)


def _sum(values: np.ndarray) -> np.ndarray:
    return np.array(mx.distributed.all_sum(mx.array(values), group=world(), stream=mx.cpu))


def from_leader(values: list[int]) -> list[int]:
    """Rank 0's whole numbers on every rank (the seeds it drew, so every rank renders the same songs)."""
    if size() == 1:
        return list(values)
    mine = np.array(values, np.int64) if is_leader() else np.zeros(len(values), np.int64)
    return [int(v) for v in _sum(mine)]


def gather_bytes(blob: bytes) -> list[bytes]:
    """Every rank's `blob`, in rank order, on every rank."""
    if size() == 1:
        return [blob]
    lengths = np.array(mx.distributed.all_gather(mx.array([len(blob)], mx.int64), group=world(), stream=mx.cpu))
    padded = np.zeros(int(lengths.max()) or 1, np.uint8)
    padded[: len(blob)] = np.frombuffer(blob, np.uint8)
    rows = np.array(mx.distributed.all_gather(mx.array(padded), group=world(), stream=mx.cpu))
    rows = rows.reshape(size(), -1)
    return [bytes(row[:n]) for row, n in zip(rows, lengths.tolist())]


def gather_json(value) -> list:
    """Every rank's JSON-able `value`, in rank order."""
    return [json.loads(b) for b in gather_bytes(json.dumps(value).encode())]


def exchange_tensors(owned: dict[int, dict[str, np.ndarray]], wanted: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """Item -> its named float32 arrays, for each item in `wanted` (the same list on every rank); exactly one rank
    holds each in `owned`. Shapes go first, then each array as a sum in which the others add zeros (exact)."""
    if size() == 1:
        return {n: owned[n] for n in wanted}
    shapes: dict[int, dict] = {}
    for part in gather_json({n: {k: list(v.shape) for k, v in owned[n].items()} for n in wanted if n in owned}):
        shapes.update({int(n): s for n, s in part.items()})
    out = {}
    for n in wanted:
        mine = owned.get(n)
        out[n] = {
            k: _sum(mine[k] if mine is not None else np.zeros(shape, np.float32)).astype(np.float32)
            for k, shape in sorted(shapes[n].items())
        }
    return out


def on_leader(fn):
    """`fn()` run by rank 0 alone (what reads or checks the run's files, which live on its machine); its JSON-able
    result on every rank, or its one-line error raised on every rank (the others do not wait for a dead leader)."""
    if size() == 1:
        return fn()
    outcome = None
    if is_leader():
        try:
            outcome = {"value": fn()}
        except AceStepError as e:
            outcome = {"error": str(e)}
    with collective("waiting for rank 0"):
        outcome = gather_json(outcome)[0]
    if "error" in outcome:
        raise AceStepError(outcome["error"] if is_leader() else f"rank 0 stopped the run: {outcome['error']}")
    return outcome["value"]


def leader_first(fn):
    """`fn()` on rank 0, then on the others: what fills a cache that ranks on one machine share (a model to
    build or convert) is built once, and found by the others."""
    if size() == 1:
        return fn()
    result = []
    on_leader(lambda: result.append(fn()))  # the others wait here, and stop with the leader's error
    return result[0] if is_leader() else fn()


def tree_from_leader(tree):
    """Rank 0's arrays in place of every rank's (a resumed adapter and optimizer state, read from its disk). The
    arrays are summed in the order of their names: a tree read from a file and one built in memory hold the same
    names in different orders, and pairing them by position would add the wrong arrays."""
    from mlx.utils import tree_flatten, tree_unflatten

    if size() == 1:
        return tree
    flat = tree_flatten(tree)
    with collective("receiving rank 0's checkpoint"):
        sums = {
            name: mx.distributed.all_sum(x if is_leader() else mx.zeros_like(x), group=world(), stream=mx.cpu)
            for name, x in sorted(flat, key=lambda item: item[0])
        }
        mx.eval(list(sums.values()))
    return tree_unflatten([(name, sums[name]) for name, _ in flat])


@contextmanager
def quiet_unless_leader():
    """What a rank other than 0 prints (progress, notes, warnings) goes nowhere: rank 0 reports for the run. Its
    errors still show: they are printed after this block."""
    if is_leader():
        yield
        return
    with open(os.devnull, "w") as sink, redirect_stdout(sink), redirect_stderr(sink):
        yield
