"""How `mlx-acestep serve` starts and stops: its socket is bound before the model loads (a taken port or a bad
address is one line, not a traceback after minutes of loading), and Ctrl-C / SIGTERM stop it in order.

The first Ctrl-C stops taking requests, drops the waiting jobs (their uploads deleted, their records saying why)
and lets the running job finish; a second one drops that job at its next step. SIGTERM (a service manager, which
kills what does not stop soon) drops the running job at once. Each says on the console which it does.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import threading
from collections.abc import Callable

from ..errors import AceStepError

STOPPED_WAITING = "cancelled: the server stopped before this job ran"
BACKLOG = 2048  # uvicorn's
GRACE_SECONDS = 5  # for the open HTTP connections to finish once the server stops taking new ones


def bind(host: str, port: int) -> socket.socket:
    """A socket bound (not yet listening: a client is refused, not left hanging, while the model loads)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise AceStepError(f"--host {host!r} is not an address this machine can listen on ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT by the last run is free
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        hint = {
            errno.EADDRINUSE: ": another program listens there (give another --port)",
            errno.EACCES: ": ports below 1024 need privileges (give --port 1024 or above)",
            errno.EADDRNOTAVAIL: ": not an address of this machine (--host)",
        }.get(e.errno, "")
        raise AceStepError(f"cannot listen on {host}:{port} ({e.strerror}){hint}") from None
    sock.set_inheritable(True)
    return sock


class Stopper:
    """The signal handler of a running server: `server` is the uvicorn server, `runner` the jobs, `say` the
    console."""

    def __init__(self, server, runner, say: Callable[[str], None]):
        self.server, self.runner, self.say = server, runner, say
        self.signals = 0
        self.dropping = False

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        before = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)

    def handle(self, sig, frame=None) -> None:
        self.signals += 1
        self.server.should_exit = True
        job = self.runner.running
        if sig == signal.SIGINT and self.signals == 1:
            self.say(
                f"stopping (no new requests): finishing the running job {job.id} (Ctrl-C again to drop it)"
                if job is not None
                else "stopping (no new requests); no job is running"
            )
            return
        # not uvicorn's force_exit: it would skip the app's shutdown (a traceback); open connections get GRACE_SECONDS
        if job is not None and not self.dropping:
            self.say(f"stopping: dropping the running job {job.id} at its next step")
            job.cancel.set()
        elif not self.dropping:
            self.say("stopping (no new requests); no job is running")
        self.dropping = True

    def finish(self) -> None:
        """Once the HTTP side is down: drop the waiting jobs, let the worker end, say so."""
        dropped = self.runner.drop_waiting(STOPPED_WAITING)
        if dropped:
            self.say(f"dropped {dropped} waiting job(s) and deleted their uploads")
        worker = self.runner.close()
        while worker.is_alive():
            worker.join(0.2)  # in short waits: a second Ctrl-C is handled meanwhile
        self.say("stopped")


def serve_until_stopped(app, sock: socket.socket, say: Callable[[str], None], ready: str) -> None:
    """Run `app` on the bound `sock` until a signal stops it, then stop in order (see the module's doc). `ready` is
    said once the socket listens: a client that reads it and connects is queued, never refused."""
    import uvicorn

    sock.listen(BACKLOG)
    say(ready)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the Stopper's handlers are the process's; uvicorn's would re-raise at exit
            yield

    server = Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACE_SECONDS))
    stopper = Stopper(server, app.state.runner, say)
    with stopper.installed():
        server.run(sockets=[sock])
        stopper.finish()
