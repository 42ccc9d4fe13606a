"""rediss:// against a real TLS-only redis-server with a throwaway CA."""

from __future__ import annotations

import subprocess as sp
from collections.abc import Iterator
from typing import Any

import pytest

from cacheframe.backends.redis import RedisBackend
from cacheframe.exceptions import BackendError
from servers import ServerProcess, free_port, require_binary


@pytest.fixture
def tls_redis(tmp_path: Any) -> Iterator[tuple[int, str]]:
    """A redis-server speaking TLS only, with a throwaway CA; yields (port, CA file)."""
    ca_key, ca_crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    key, csr, crt = tmp_path / "srv.key", tmp_path / "srv.csr", tmp_path / "srv.crt"
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl = "openssl"
    for argv in (
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca_crt,
            "-days",
            "1",
            "-subj",
            "/CN=cacheframe-test-ca",
        ],
        [
            openssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca_crt,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            crt,
            "-days",
            "1",
            "-extfile",
            ext,
        ],
    ):
        sp.run([str(a) for a in argv], check=True, capture_output=True)
    port = free_port()
    argv = [
        require_binary("redis-server"),
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        str(crt),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca_crt),
        "--tls-auth-clients",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    process = ServerProcess(argv, port, "redis-tls").start()
    try:
        yield port, str(ca_crt)
    finally:
        process.stop()


async def test_rediss_against_a_tls_server(tls_redis: tuple[int, str]) -> None:
    """rediss:// talks TLS to a real TLS-only server, verifying its certificate against the CA."""
    port, ca = tls_redis
    backend = RedisBackend.from_url(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&timeout=2")
    try:
        await backend.set("tls:k", b"secret", 30)
        assert await backend.get("tls:k") == b"secret"
    finally:
        await backend.close()
    untrusted = RedisBackend.from_url(f"rediss://127.0.0.1:{port}/0?timeout=2")  # system CAs only
    with pytest.raises(BackendError):
        await untrusted.get("tls:k")
    await untrusted.close()
