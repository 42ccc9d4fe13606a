"""Throwaway server processes for the tests: started on free loopback ports, killed afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

__all__ = [
    "ServerProcess",
    "assert_one_call_within_timeout",
    "free_port",
    "require_binary",
    "silent_server",
    "wait_port",
]

# How far past its ``timeout`` one store call may end against a silent server: the event
# loop's timer granularity and scheduling on a busy two-core machine, nothing more.
# (Before: memcached took timeout + connect_timeout, Sentinel twice the timeout.)
SILENT_MARGIN = 0.2


def free_port(limit: int = 55535) -> int:
    """A free TCP port on 127.0.0.1 (at most ``limit``, e.g. to leave room for a cluster bus port)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= limit:
            return port
    raise RuntimeError("no free port found")


def require_binary(name: str) -> str:
    """Path of a server binary; fail (not skip) when missing: .ci/run installs them."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if path is None:
        pytest.fail(f"{name} is not installed; run: apt-get install -y redis-server redis-tools memcached")
    return path


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class ServerProcess:
    """One server process that tests can kill, pause, resume and restart on the same port."""

    def __init__(self, argv: Sequence[str], port: int, name: str = "server") -> None:
        self.argv = list(argv)
        self.port = port
        self.name = name
        self.workdir = tempfile.mkdtemp(prefix=f"cf-{name}-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        """Start (or restart) the process and wait for its port."""
        self.proc = subprocess.Popen(
            self.argv, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        # The signal is delivered asynchronously: wait until the process is really stopped, so
        # that a request sent right after never races the server's last moments of running.
        stat = f"/proc/{self.proc.pid}/stat"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(stat) as file:
                    if file.read().rpartition(")")[2].split()[0] in ("T", "t"):
                        return
            except OSError:  # not Linux, or gone: nothing better to wait for
                return
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill and remove the working directory."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers: the kernel completes
    the handshakes into the listen backlog and nothing ever reads or writes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        yield int(sock.getsockname()[1])


async def assert_one_call_within_timeout(backend: object, timeout: float) -> None:
    """get, set, delete and clear against a silent server each raise BackendError, none past
    ``timeout`` + SILENT_MARGIN (connecting, finding a master or the cluster included)."""
    import asyncio

    from cacheframe.exceptions import BackendError

    calls = {
        "get": lambda: backend.get("cf:k"),  # type: ignore[attr-defined]
        "set": lambda: backend.set("cf:k", b"v", 5),  # type: ignore[attr-defined]
        "delete": lambda: backend.delete("cf:k"),  # type: ignore[attr-defined]
        "clear": lambda: backend.clear("cf:"),  # type: ignore[attr-defined]
    }
    loop = asyncio.get_running_loop()
    for name, call in calls.items():
        for attempt in range(2):  # a stalled machine (a paused VM) shows once; no deadline, every time
            started = loop.time()
            with pytest.raises(BackendError):
                await asyncio.wait_for(call(), 10)  # the bound on a hang, far above the limit
            took = loop.time() - started
            if took < timeout + SILENT_MARGIN or attempt:
                break
        assert took < timeout + SILENT_MARGIN, f"{name} took {took:.3f}s with timeout={timeout}"
