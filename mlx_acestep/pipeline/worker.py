"""One thread per pipeline that runs all of its MLX work, whichever thread asks.

MLX gives every thread its own streams (and compile cache); an array still to be
computed belongs to the thread that built it, and a thread that used MLX must call
`mx.clear_streams()` before it ends, or the process can abort at exit ("terminate
called without an active exception"). A pipeline therefore never runs MLX on its
caller's thread: `Worker.run(fn)` hands `fn` to the pipeline's own thread and waits
for it. Apps may call from any thread, calls are serialised, the streams live on
one thread that cleans up after itself, and the caller's threads stay free of MLX
state. `close()` (or the pipeline's garbage collection, or the end of the process)
stops the thread.

Ctrl-C in the waiting caller cancels the running call at its next progress event
(the `cancel` event the pipeline checks), then re-raises KeyboardInterrupt.
"""

from __future__ import annotations

import atexit
import dataclasses
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import mlx.core as mx

T = TypeVar("T")
_live: weakref.WeakSet[Worker] = weakref.WeakSet()


class Worker:
    def __init__(self, name: str = "mlx-acestep"):
        self.name = name
        self.cancel = threading.Event()  # set when the caller gives up (Ctrl-C); the pipeline checks it
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping: list[threading.Thread] = []  # told to stop, maybe still finishing
        self._start = threading.Lock()
        _live.add(self)

    def run(self, fn: Callable[[], T], *inputs) -> T:
        """`fn()` on the worker thread; its result or its exception comes back here.

        `inputs` are the caller's objects that `fn` reads: any MLX array in them (in lists, tuples, dicts,
        dataclasses) is computed here first, since an array still to compute belongs to this thread.
        """
        materialise(inputs)
        if threading.current_thread() is self._thread:  # a callback that calls back in: run it in place
            return fn()
        future = self.submit(fn)
        try:
            return future.result()
        except KeyboardInterrupt:
            self.cancel.set()  # stop at the next progress event rather than finish minutes of work
            try:
                future.exception()
            finally:
                self.cancel.clear()
            raise

    def submit(self, fn: Callable[[], T]) -> Future:
        """`fn()` queued on the worker thread without waiting (a stream reads what it hands out meanwhile)."""
        future: Future = Future()
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._queue.put((fn, future))
        return future

    def _loop(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                fn, future = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as e:  # noqa: BLE001 (handed to the caller)
                        future.set_exception(e)
                del fn, future, item
        finally:
            mx.clear_streams()  # this thread's streams and compile cache, while the interpreter is alive

    def close(self, wait: bool = True) -> None:
        """Stop the thread once it has finished what it was given; `wait` joins it (the end of the process does)."""
        with self._start:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
                self._stopping.append(thread)
        if wait:
            for t in list(self._stopping):
                if t is not threading.current_thread():
                    t.join()
                    self._stopping.remove(t)


def materialise(obj) -> None:
    """Evaluate every MLX array reachable from `obj` on the calling thread."""
    arrays = []

    def walk(x, depth=0):
        if depth > 4:
            return
        if isinstance(x, mx.array):
            arrays.append(x)
        elif isinstance(x, (list, tuple)):
            for item in x:
                walk(item, depth + 1)
        elif isinstance(x, dict):
            for item in x.values():
                walk(item, depth + 1)
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            for f in dataclasses.fields(x):
                walk(getattr(x, f.name, None), depth + 1)

    walk(obj)
    if arrays:
        mx.eval(*arrays)


@atexit.register
def _shutdown() -> None:
    for worker in list(_live):
        worker.close()
    mx.clear_streams()  # the main thread's (it may have built the models' configs and small arrays)
