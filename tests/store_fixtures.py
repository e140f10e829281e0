"""Pytest plugin: real redis-server processes, a 3-master Redis Cluster, and a store factory.

Servers run on free loopback ports in temporary directories and are stopped at the end of
the session; tests get a flushed database. Without a ``redis-server`` binary the Redis
fixtures skip with the reason, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("agent_budget.testing")  # full messages from the shipped suite

from agent_budget import Usage  # noqa: E402
from agent_budget.stores import MemoryStore, Store  # noqa: E402

__all__ = [
    "STORE_KINDS",
    "FakeProvider",
    "RedisCluster",
    "RedisServer",
    "StoreFactory",
    "free_port",
    "need_redis",
    "redis_client",
    "self_signed_cert",
]

STORE_KINDS = ("memory", "sqlite", "redis", "redis-scripts", "redis-cluster")


class FakeProvider:
    """Counts calls: a refused budget must leave it at zero."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input_tokens: int, output_tokens: int) -> Usage:
        self.calls += 1
        return Usage(input_tokens, output_tokens)


_START_TIMEOUT = 15.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def need_redis(binary: str = "redis-server") -> str:
    """The path of a Redis binary and a check that redis-py imports; skip (fail in CI) if not."""
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/bin/{binary}", f"/usr/local/bin/{binary}") if os.access(p, os.X_OK)),
        None,
    )
    reason = None
    if path is None:
        reason = (
            f"no {binary} binary on PATH: install it (Debian/Ubuntu: apt-get install "
            "redis-server) to run the Redis store tests"
        )
    else:
        try:
            import redis  # noqa: F401
        except ImportError:
            reason = "redis-py is not installed: pip install 'agent-budget[redis]'"
    if reason is not None:
        if _in_ci():
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    assert path is not None
    return path


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when the test process dies, so a
    killed test run leaves no redis-server behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(*, with_bus: bool = False) -> int:
    """A currently unused 127.0.0.1 port (and its cluster bus port +10000, if asked)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 >= 65536:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port found")


def redis_client(
    port: int, *, tls: bool = False, password: str | None = None, timeout: float = 5.0
) -> Any:
    """A plain redis-py client for fixtures' own checks (ping, flush, cluster state)."""
    import redis

    extra: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "none"} if tls else {}
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **extra,
    )


def self_signed_cert(workdir: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 made with the openssl CLI (or skip)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary to make a test certificate")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@dataclass
class RedisServer:
    """One redis-server process on a fixed loopback port; kill and restart keep the port."""

    binary: str
    workdir: Path
    port: int = 0
    cluster: bool = False
    persist: bool = False
    password: str | None = None
    tls: tuple[Path, Path] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(with_bus=self.cluster)
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 5.0) -> Any:
        return redis_client(
            self.port, tls=self.tls is not None, password=self.password, timeout=timeout
        )

    def start(self) -> RedisServer:
        if self.tls:
            cert, key = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                     "--tls-auth-clients", "no"]  # fmt: skip
        else:
            ports = ["--port", str(self.port)]
        if self.password:
            ports += ["--requirepass", self.password]
        args = [
            self.binary,
            *ports,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.workdir / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start on port {self.port}:\n{log}")
            try:
                # Short timeouts: a TLS handshake begun while the server starts can stall.
                with self.client(timeout=0.5) as client:
                    if client.ping():
                        return self
            except Exception:
                if time.monotonic() > deadline:
                    self.kill()
                    raise
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait for it to go."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()


@dataclass
class RedisCluster:
    """Three cluster-enabled masters joined by ``redis-cli --cluster create``."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}/"

    def flush(self) -> None:
        for node in self.nodes:
            with redis_client(node.port) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(workdir: Path) -> RedisCluster:
    server_bin = need_redis("redis-server")
    cli = need_redis("redis-cli")
    nodes: list[RedisServer] = []
    try:
        for index in range(3):
            nodes.append(RedisServer(server_bin, workdir / f"node{index}", cluster=True).start())
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while True:
            states = []
            for node in nodes:
                with redis_client(node.port) as client:
                    states.append(client.execute_command("CLUSTER", "INFO"))
            if all(b"cluster_state:ok" in s for s in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not converge: {states!r}")
            time.sleep(0.05)
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return RedisCluster(nodes)


@pytest.fixture(autouse=True)
def _spool_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test spools outage buffers under its own temporary directory (never the user's
    ~/.local/state); child processes inherit it."""
    folder = tmp_path / "spool"
    monkeypatch.setenv("AGENT_BUDGET_SPOOL_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session (flush it through ``redis_url``)."""
    binary = need_redis()
    server = RedisServer(binary, tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, on an empty database."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on loopback ports for the whole session."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Private servers a test may kill and restart; all stopped at the end of the test."""
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(need_redis(), tmp_path / f"redis{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


class StoreFactory:
    """Opens stores of one kind over one shared state: each call is a new handle (a new
    process would open the same URL); memory returns its one instance. ``url`` is None
    for memory."""

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self.url = url
        self._opened: list[Store] = []
        self._memory: dict[tuple[tuple[str, Any], ...], MemoryStore] = {}

    def __call__(self, **options: Any) -> Store:
        if self.kind == "memory":
            key = tuple(sorted(options.items()))
            if key not in self._memory:
                self._memory[key] = MemoryStore(**options)
            return self._memory[key]
        assert self.url is not None
        store = Store.from_url(self.url, **options)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-scripts", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A :class:`StoreFactory` for every store kind; Redis ones take ``now`` from the caller
    (``server_time=0``) so the fake clock drives them. "redis" runs the operations as Redis
    Functions, "redis-scripts" as EVALSHA scripts (what servers before Redis 7 get)."""
    kind = request.param
    if kind == "memory":
        url = None
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'budget.db'}"
    elif kind in ("redis", "redis-scripts"):
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        url = f"{server.url}?server_time=0"
        if kind == "redis-scripts":
            url += "&functions=0"
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        url = f"{cluster.url}?server_time=0"
    factory = StoreFactory(kind, url)
    yield factory
    factory.close()
