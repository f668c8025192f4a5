"""Real Mosquitto brokers for the tests, and a subscriber that records what it hears.

``broker``: one plain broker per session (anonymous, no persistence, a free port on
127.0.0.1). ``private_broker``: a fresh one for a test that stops and restarts it.
``auth_broker`` / ``tls_broker``: brokers that require a password / TLS (certificates made
with the openssl CLI in the test's temporary directory). The system's own broker on 1883
is never used.

``device_id``: a device id of the test's own, so retained messages one test leaves on the
session's broker are never seen by another. ``Collector.sync``: a sentinel round trip, so
"nothing (else) arrived" is checked after a message that came later, never after a sleep.
"""

from __future__ import annotations

import getpass
import hashlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

__all__ = [
    "Broker",
    "Collector",
    "Msg",
    "TlsFiles",
    "auth_broker",
    "broker",
    "collector",
    "device_id",
    "device_id_for",
    "make_tls_files",
    "mosquitto_bin",
    "private_broker",
    "tls_broker",
    "wait_until",
]

USER, PASSWORD = "edge", "s3cret-pw"
# The retained ``state`` payload's keys, written out here (not taken from edged) so the
# tests pin the documented schema.
STATE_KEYS = frozenset(
    {
        "expression",
        "confidence",
        "distance",
        "faces",
        "since",
        "timestamp",
        "model_version",
        "detect",
    }
)
SENTINEL = "edged-test-sentinel"  # each Collector's own round-trip topic lives under this


def device_id_for(nodeid: str) -> str:
    """A topic-safe device id unique to one test (or module) node id: ``t`` + 10 hex digits."""
    return "t" + hashlib.sha1(nodeid.encode()).hexdigest()[:10]


@pytest.fixture
def device_id(request: pytest.FixtureRequest) -> str:
    """This test's own device id: no other test publishes (or leaves retained) under it."""
    return device_id_for(request.node.nodeid)


def mosquitto_bin() -> str | None:
    """The mosquitto binary: on PATH, or in /usr/sbin (not on PATH for non-root users)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if Path(p).is_file():
            return p
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``cond`` until truthy or the deadline; returns whether it came true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


class Broker:
    """A mosquitto process on a fixed port: `stop` and `start` again on the SAME port."""

    def __init__(self, workdir: Path, extra_conf: str = "", anonymous: bool = True) -> None:
        exe = mosquitto_bin()
        if exe is None:
            pytest.skip("mosquitto is not installed (tools/system-deps --test installs it)")
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.host = "127.0.0.1"
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence false\n"
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + extra_conf
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_until(self._listening, 10):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on {self.port}: {self.log_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        wait_until(lambda: not self._listening(), 5)

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            return False
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def collector(self, topic: str | Sequence[str] = "#", **kw: object) -> Collector:
        return Collector(self, topic, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool
    at: float  # monotonic time received

    @property
    def text(self) -> str:
        return self.payload.decode()


@dataclass
class Collector:
    """A paho client subscribed to ``topic`` (one filter or several) that keeps every
    message it receives, in arrival order.

    It is also subscribed to a sentinel topic of its own (``edged-test-sentinel/<uuid>``,
    never recorded in ``messages``), for `sync`.
    """

    broker: Broker
    topic: str | Sequence[str] = "#"
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    messages: list[Msg] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self._tokens: set[str] = set()
        self._sentinel = f"{SENTINEL}/{uuid.uuid4().hex}"
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        if self.tls_ca:
            self.client.tls_set(
                ca_certs=str(self.tls_ca),
                certfile=str(self.tls_cert) if self.tls_cert else None,
                keyfile=str(self.tls_key) if self.tls_key else None,
            )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe")

    @property
    def filters(self) -> list[str]:
        return [self.topic] if isinstance(self.topic, str) else list(self.topic)

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object):
        client.subscribe([(t, 1) for t in (*self.filters, self._sentinel)])

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            if m.topic.startswith(SENTINEL + "/"):  # ours (or another collector's, via #)
                if m.topic == self._sentinel:
                    self._tokens.add(m.payload.decode())
                    self._returned.notify_all()
                return
            self.messages.append(Msg(m.topic, bytes(m.payload), bool(m.retain), time.monotonic()))

    def sync(self, timeout: float = 5.0) -> None:
        """Return once everything the broker queued for this collector before now arrived.

        Publishes a unique message (QoS 1) on this collector's own sentinel topic and waits
        for it: the broker delivers a client's messages in order, so whatever it had
        already taken in for us (other clients' messages it has acknowledged, retained
        copies for our subscriptions) is in ``messages`` when this returns. It cannot wait
        for what another client has not yet handed to the broker: for that, have that
        client publish a later message of its own and `wait_for` it.
        """
        token = uuid.uuid4().hex
        self.client.publish(self._sentinel, token, qos=1)
        with self._returned:
            if not self._returned.wait_for(lambda: token in self._tokens, timeout):
                raise AssertionError(f"the sentinel did not come back in {timeout}s")

    def on(self, topic: str) -> list[Msg]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def after(self, msg: Msg, topic: str | None = None) -> list[Msg]:
        """The messages that arrived after ``msg`` (this very message), on ``topic`` if given."""
        with self._lock:
            i = next(i for i, m in enumerate(self.messages) if m is msg)
            return [m for m in self.messages[i + 1 :] if topic is None or m.topic == topic]

    def wait_for(
        self,
        topic: str,
        pred: Callable[[Msg], bool] = lambda m: True,
        timeout: float = 10.0,
        after: Msg | None = None,
    ) -> Msg:
        """The first message on ``topic`` matching ``pred`` (and arriving after ``after``,
        if given); fails the test at the deadline."""
        found: list[Msg] = []

        def check() -> bool:
            candidates = self.on(topic) if after is None else self.after(after, topic)
            found[:] = [m for m in candidates if pred(m)]
            return bool(found)

        if not wait_until(check, timeout):
            seen = sorted({m.topic for m in self.messages})
            raise AssertionError(f"no matching message on {topic} in {timeout}s (seen: {seen})")
        return found[0]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        sock = self.client.socket()  # paho leaves it open if stopped mid-reconnect
        if sock is not None:
            sock.close()


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that did not sign the server's certificate


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls_files(d: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    d.mkdir(parents=True, exist_ok=True)
    days = ("-days", "2")
    for ca in ("ca", "other"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
            "-out", f"{ca}.crt", "-subj", f"/CN=edged test {ca} CA", *days, cwd=d,
        )  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", *days, *ext, cwd=d,
        )  # fmt: skip
    return TlsFiles(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key",
        d / "other.crt",
    )  # fmt: skip


def _running(b: Broker) -> Iterator[Broker]:
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's plain broker. Don't stop it: use ``private_broker`` for that."""
    yield from _running(Broker(tmp_path_factory.mktemp("broker")))


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, free to `stop` and `start` (same port)."""
    d = tmp_path / "private-broker"
    d.mkdir()
    yield from _running(Broker(d))


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    """Requires user ``edge`` / ``s3cret-pw``; anonymous clients are refused."""
    d = tmp_path / "auth-broker"
    d.mkdir()
    pw = d / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), USER, PASSWORD], check=True)
    pw.chmod(0o600)
    yield from _running(Broker(d, f"password_file {pw}\n", anonymous=False))


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, TlsFiles]]:
    """TLS only, and the client must present a certificate signed by the test CA."""
    d = tmp_path / "tls-broker"
    files = make_tls_files(d / "certs")
    conf = (
        f"cafile {files.ca}\ncertfile {files.server_cert}\nkeyfile {files.server_key}\n"
        "require_certificate true\ntls_version tlsv1.2\n"
    )
    b = Broker(d, conf)
    b.start()
    try:
        yield b, files
    finally:
        b.stop()


@pytest.fixture
def collector() -> Iterator[Callable[..., Collector]]:
    """Factory: ``collector(broker, "edged/#")`` -> a started `Collector`, closed afterwards."""
    made: list[Collector] = []

    def make(b: Broker, topic: str | Sequence[str] = "#", **kw: object) -> Collector:
        c = Collector(b, topic, **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
