"""Throwaway server processes for the tests: started on free loopback ports, killed afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

import pytest

__all__ = ["ServerProcess", "free_port", "require_binary", "wait_port"]


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

    def resume(self) -> None:
        """SIGCONT."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill and remove the working directory."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
