"""Processes the benchmark starts and stops by PID: redis-server, memcached and uvicorn apps.

Everything binds to 127.0.0.1 on a free port; nothing here touches a server the
benchmark did not start (the machine's Redis on 6379 is never used).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent


def child_environ(**extra: str) -> dict[str, str]:
    """This process's environment for a child started in another directory: a relative
    ``PYTHONPATH`` (``PYTHONPATH=src``, a worktree's code) made absolute, or the child would
    import whatever cacheframe is installed instead."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p
        )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 8.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only this process, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Store:
    """A redis-server or memcached of our own on a free loopback port."""

    def __init__(self, kind: str, logdir: Path, verbose: bool = False) -> None:
        self.kind = kind
        self.verbose = verbose
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix=f"cf-bench-{kind}-")
        if kind == "redis":
            argv = [shutil.which("redis-server") or "redis-server", "--bind", HOST, "--port", str(self.port)]
            argv += ["--save", "", "--appendonly", "no", "--dir", self.workdir]
        elif kind == "memcached":
            argv = [shutil.which("memcached") or "memcached", "-l", HOST, "-p", str(self.port), "-U", "0"]
            argv += ["-m", "256"] + (["-u", "nobody"] if os.geteuid() == 0 else [])
            argv += ["-vv"] if verbose else []  # logs every command: only for counting, never for load
        else:
            raise ValueError(kind)
        self.log_path = logdir / f"{kind}{'-vv' if verbose else ''}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            argv, cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_port(self.port, self.proc)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        if self.kind == "redis":
            return f"redis://{HOST}:{self.port}/0"
        return f"memcached://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def version(self) -> str:
        exe = self.proc.args[0]
        flag = "--version" if self.kind == "redis" else "-V"
        out = subprocess.run([exe, flag], capture_output=True, text=True, timeout=10).stdout.strip()
        return out.split(" sha=")[0]

    def command_counts(self) -> dict[str, int]:
        """Commands served so far: Redis ``INFO commandstats``; memcached ``stats`` counters."""
        if self.kind == "redis":
            return self._redis_commandstats()
        stats = self._memcached_stats()
        keep = ("cmd_", "get_", "delete_", "incr_", "decr_", "cas_", "touch_")
        return {k: v for k, v in stats.items() if k.startswith(keep)}

    def logged_commands(self) -> Counter[str]:
        """Commands a ``-vv`` memcached has logged so far, by name (one per request line)."""
        time.sleep(0.3)  # memcached's worker threads write the log as they go
        text = self.log_path.read_bytes()
        return Counter(m.group(1).decode() for m in _MC_COMMAND.finditer(text))

    def _redis_commandstats(self) -> dict[str, int]:
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            s.sendall(b"INFO commandstats\r\n")
            header = b""
            while not header.endswith(b"\r\n"):
                chunk = s.recv(1)
                if not chunk:
                    raise OSError("redis closed the connection")
                header += chunk
            size = int(header[1:-2])
            body = b""
            while len(body) < size + 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        out: dict[str, int] = {}
        for line in body.decode().splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_") :].split(":", 1)
                fields = dict(part.split("=", 1) for part in rest.split(","))
                out[name] = int(fields["calls"])
        return out

    def _memcached_stats(self) -> dict[str, int]:
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            s.sendall(b"stats\r\n")
            buf = b""
            deadline = time.monotonic() + 5
            while not buf.endswith(b"END\r\n") and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        out: dict[str, int] = {}
        for line in buf.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
                out[parts[1]] = int(parts[2])
        return out

    def close(self) -> None:
        stop(self.proc)
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


_MC_COMMAND = re.compile(
    rb"^<\d+ (get|gets|gat|gats|set|add|replace|append|prepend|cas|touch|delete|incr|decr|flush_all"
    rb"|mg|ms|md|ma|mn|me)\b",
    re.M,
)


def command_delta(kind: str, before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands sent between two snapshots (the snapshot's own INFO/stats left out)."""
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    if kind == "redis":
        delta.pop("info", None)
    return delta


MEMCACHED_COMMANDS = (
    "cmd_get",
    "cmd_set",
    "cmd_touch",
    "cmd_flush",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
)


def total_commands(kind: str, delta: dict[str, int]) -> int:
    """Commands in a delta: every Redis command; memcached's per-command counters summed."""
    if kind == "redis":
        return sum(delta.values())
    return sum(delta.get(k, 0) for k in MEMCACHED_COMMANDS)


def command_breakdown(kind: str, delta: dict[str, int]) -> dict[str, int]:
    if kind == "redis":
        return dict(delta)
    return {k: delta[k] for k in (*MEMCACHED_COMMANDS, "get_hits", "get_misses") if delta.get(k)}


class App:
    """One uvicorn process (1 worker, uvloop/httptools when installed) serving ``apps.<module>:app``."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        loop = "uvloop" if _importable("uvloop") else "asyncio"
        parser = "httptools" if _importable("httptools") else "h11"
        argv = [sys.executable, "-m", "uvicorn", f"apps.{module}:app", "--app-dir", str(BENCH_DIR)]
        argv += ["--host", HOST, "--port", str(self.port), "--loop", loop, "--http", parser]
        argv += ["--log-level", "warning", "--no-access-log"]
        self.log = open(log_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            argv,
            env=child_environ(PYTHONDONTWRITEBYTECODE="1", **env),
            cwd=str(BENCH_DIR),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.conn: http.client.HTTPConnection | None = None
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                self._drop()
                time.sleep(0.1)
        raise RuntimeError(f"app not ready within {timeout} s; see {self.log.name}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One GET on a keep-alive connection (reopened when the server closed it)."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
            try:
                self.conn.request("GET", path, headers=headers or {})
                response = self.conn.getresponse()
                body = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, body
            except (OSError, http.client.HTTPException):
                self._drop()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, path: str) -> Any:
        status, _, body = self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        return json.loads(body)

    def reconnect(self) -> None:
        """Drop the keep-alive connection; the next ``get`` opens a new one."""
        self._drop()

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self._drop()
        stop(self.proc)
        self.log.close()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
