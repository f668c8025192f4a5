"""The paho client edged connects with: id, will, credentials, TLS, backoff, and errors in words.

Shared by the daemon's publisher and the one-shot ``edged ha-remove``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edged.credentials import read_password
from edged.errors import BrokerError, ConfigError
from edged.mqtt.messages import OFFLINE, Topics

if TYPE_CHECKING:
    from edged.settings import MqttSettings, Settings

log = logging.getLogger(__name__)

CREDENTIAL_NAME = "mqtt_password"  # systemd LoadCredential=mqtt_password:/etc/...
# A safety net under "never publish while disconnected": the race between the broker
# vanishing and paho noticing may queue a few messages, never more than this.
MAX_QUEUED = 100
CONNECT_TIMEOUT = 2.0  # s for one TCP connect; paho's 5 s default would hold up a shutdown
MACHINE_ID = Path("/etc/machine-id")
# machine-id(5): never show the machine id itself; hash it with a fixed key of the
# application's own (like sd_id128_get_machine_app_specific). This is edged's key.
APP_KEY = bytes.fromhex("5c1f0e8a3b7d4e29a6c2f1d07b9e3a48")

# CONNACK refusals by reason *code* (MQTT 5 numbering, which paho maps MQTT 3.1.1's
# return codes 1-5 onto), never by paho's English text, which may change.
CONNACK_WORDS: dict[int, str] = {
    128: "the broker refused the connection without saying why (unspecified error)",
    131: "the broker refused the connection (implementation-specific error)",
    132: "the broker does not speak MQTT 3.1.1",
    133: "the broker rejected the client id (mqtt.client_id)",
    134: "bad username or password (check mqtt.username and the password, password_file "
    "or the mqtt_password credential)",
    # MQTT 3.1.1 brokers (mosquitto 2) answer a wrong password with "not authorized".
    135: "not authorized: bad username or password, or this client is not allowed (check "
    "mqtt.username, the password and the broker's ACL)",
    136: "the broker says it is unavailable",
    137: "the broker is busy",
    138: "this client is banned by the broker",
}


def resolve_password(cfg: MqttSettings, environ: Mapping[str, str] = os.environ) -> str | None:
    """The password: ``password``, else ``password_file``, else the systemd credential.

    Whatever it is, it is registered as a secret (`edged.redact`): no log line, error or
    payload shows it from then on.
    """
    return read_password(
        "mqtt.password_file", cfg.password, cfg.password_file, CREDENTIAL_NAME, environ
    )


def describe_connack(reason: object) -> str:
    """A CONNACK refusal in words a person can act on (``reason``: paho's ReasonCode or an int)."""
    code = getattr(reason, "value", reason)
    if isinstance(code, int) and code in CONNACK_WORDS:
        return CONNACK_WORDS[code]
    return f"the broker refused the connection ({reason}, code {code})"


def describe_oserror(err: BaseException | None, host: str, port: int) -> str:
    """Why the TCP/TLS connection failed, e.g. an untrusted certificate or no listener."""
    where = f"{host}:{port}"
    if isinstance(err, ssl.SSLError):
        return _describe_tls_error(err, where)
    if isinstance(err, ConnectionRefusedError):
        return f"connection refused by {where} (is the broker running and listening there?)"
    if isinstance(err, socket.gaierror):
        return f"unknown broker host {host!r} ({err.strerror})"
    if isinstance(err, TimeoutError | socket.timeout):
        return f"timed out connecting to {where}"
    if isinstance(err, OSError):
        return f"cannot connect to {where}: {err.strerror or err}"
    return f"cannot connect to {where}"


def _describe_tls_error(err: ssl.SSLError, where: str) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({err.verify_message}) at {where}"
    return f"TLS handshake with {where} failed ({err.reason or err})"


def machine_tag(path: Path = MACHINE_ID) -> str | None:
    """8 hex digits standing for this machine (HMAC-SHA256 of its machine id under
    `APP_KEY`), the same on every start; None when the id is missing or unreadable."""
    try:
        raw = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{32}", raw):  # empty, or "uninitialized" at first boot
        return None
    return hmac.new(APP_KEY, bytes.fromhex(raw), hashlib.sha256).hexdigest()[:8]


def default_client_id(path: Path = MACHINE_ID) -> str:
    """``edged-<machine>-<random>``: which machine (stable, not its id), plus a part new
    on every start, so two daemons never share a client id (and so never take the broker
    connection from each other), not even from cloned SD cards. At most 21 characters:
    inside MQTT 3.1.1's 23-byte guidance for client ids."""
    tag = machine_tag(path)
    if tag is None:
        return f"edged-{secrets.token_hex(7)}"
    return f"edged-{tag}-{secrets.token_hex(3)}"


def client_id_of(client: mqtt.Client) -> str:
    """The id ``client`` connects with (paho keeps it, but offers no getter)."""
    return client._client_id.decode(errors="replace")


def make_client(
    settings: Settings, will: bool = True, environ: Mapping[str, str] = os.environ
) -> mqtt.Client:
    """A configured (not yet connected) paho client: id, will, credentials, TLS, backoff.

    The daemon's publisher replaces the will: it sets it only once it owns the topics.
    """
    cfg = settings.mqtt
    client_id = cfg.client_id or default_client_id()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.connect_timeout = CONNECT_TIMEOUT
    if will:
        topics = Topics.of(cfg.prefix, cfg.device_id)
        client.will_set(topics.availability, OFFLINE, qos=max(cfg.qos, 1), retain=True)
    password = resolve_password(cfg, environ)
    if cfg.username is not None or password is not None:
        client.username_pw_set(cfg.username or "", password)
    if cfg.uses_tls:
        for key in ("ca_file", "certfile", "keyfile"):
            path = getattr(cfg, key)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"mqtt.{key}: {path} does not exist")
        try:
            client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.certfile) if cfg.certfile else None,
                keyfile=str(cfg.keyfile) if cfg.keyfile else None,
                cert_reqs=ssl.CERT_NONE if cfg.tls_insecure else ssl.CERT_REQUIRED,
            )
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"mqtt TLS files cannot be used: {e}") from None
        if cfg.tls_insecure:
            client.tls_insecure_set(True)
            log.warning("mqtt.tls_insecure: the broker's certificate is NOT verified")
    # paho annotates whole seconds, but its backoff takes any number (reconnect_min = 0.5).
    client.reconnect_delay_set(cfg.reconnect_min, cfg.reconnect_max)  # type: ignore[arg-type]
    client.max_queued_messages_set(MAX_QUEUED)
    return client


def connect_once(settings: Settings, timeout: float = 10.0) -> mqtt.Client:
    """Connect synchronously (for one-shot commands); `BrokerError` in words on failure."""
    cfg = settings.mqtt
    client = make_client(settings, will=False)
    result: dict[str, str | None] = {}
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result["error"] = describe_connack(reason) if reason.is_failure else None
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(cfg.host, cfg.port, cfg.keepalive)
    except (OSError, ValueError) as e:
        raise BrokerError(describe_oserror(e, cfg.host, cfg.port)) from None
    client.loop_start()
    if not done.wait(timeout) or result.get("error"):
        client.loop_stop()
        reason = result.get("error") or f"no answer from {cfg.host}:{cfg.port} in {timeout:.0f}s"
        raise BrokerError(f"MQTT: {reason}")
    return client
