"""All of edged's settings: one pydantic model per section.

Sources, lowest first: defaults < TOML file (``--config``) < environment (``EDGED_``
prefix, ``__`` between section and key, e.g. ``EDGED_MQTT__HOST``) < command-line flags.
Unknown keys are errors. `load_settings` is the one entry point; it raises `ConfigError`
naming every bad field, its value and the reason.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import math
import os
import re
import socket
import textwrap
import tomllib
import types
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from edged.errors import ConfigError
from edged.redact import (
    redact,
    register_secret,
    register_source,
    secret_name,
    secret_value_name,
    url_secrets,
)

# Bounds shared by several settings. Every wait edged makes is at most MAX_WAIT, far below
# what Python's timed waits accept (threading.TIMEOUT_MAX, ~292 years on 64-bit Linux,
# is where Event.wait and Lock.acquire overflow).
MAX_WAIT = 3600.0  # s: retries, reconnects, file polls, heartbeats: an hour at most
MAX_PERIOD = 86400.0  # s: reports that are only compared with the clock: a day at most
MAX_DURATION = 31_536_000.0  # s: loop.duration, a year
MAX_PIXELS = 16384  # a frame side OpenCV and any camera driver accept
SWITCH_FILE = "detect.state"  # the privacy switch's state, in the state directory

# The TOML file's values for the Settings() call that load_settings is making.
_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("edged_settings_file", default={})  # noqa: B039


@dataclass(frozen=True)
class ZeroOr:
    """Field metadata: 0 means ``zero`` (off, or the camera's own value); any other value
    must be at least ``minimum`` (a tiny positive one would be nonsense, e.g. a period of
    1e300 s)."""

    minimum: float
    zero: str


def _kinds(annotation: Any) -> set[Any]:
    """The plain types a field's annotation allows: ``float | None`` gives {float, None}."""
    if get_origin(annotation) is Annotated:
        return _kinds(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return {k for arg in get_args(annotation) for k in _kinds(arg)}
    return {type(None) if annotation is None else annotation}


class Section(BaseModel):
    """A settings section. Every section refuses what lax parsing would let through: a
    bool as a number (``width = true`` is not 1), a number as a bool, an empty path (it
    would become "."), NaN and infinities; and it keeps every number within its bounds
    (``Field(ge=, le=)``; `ZeroOr`). Strings still parse (environment variables are
    strings: ``EDGED_LOOP__FPS=2``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_lax_coercion(cls, value: Any, info: ValidationInfo) -> Any:
        kinds = _kinds(cls.model_fields[str(info.field_name)].annotation)
        numeric = bool(kinds & {int, float})
        if isinstance(value, bool) and numeric and bool not in kinds:
            raise ValueError("must be a number, not true or false")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and bool in kinds and not numeric:
            raise ValueError("must be true or false, not a number")
        if Path in kinds and isinstance(value, str | Path) and str(value).strip() in ("", "."):
            raise ValueError("must not be empty (a path; it would become '.', this folder)")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _zero_or_at_least(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, float) and value == 0:
            return 0.0  # -0.0 too
        for rule in cls.model_fields[str(info.field_name)].metadata:
            if (
                isinstance(rule, ZeroOr)
                and isinstance(value, int | float)
                and 0 < value < rule.minimum
            ):
                raise ValueError(f"must be 0 ({rule.zero}) or at least {rule.minimum:g}")
        return value


class CameraSettings(Section):
    source: str = Field(
        "0",
        min_length=1,
        description="Device index ('0'), device path ('/dev/video0'), video file, "
        "rtsp:// or http(s):// URL, GStreamer pipeline (contains '!'), or 'picamera2'.",
    )
    width: int = Field(
        640, ge=0, le=MAX_PIXELS, description="Requested frame width in pixels (0: camera default)."
    )
    height: int = Field(
        480, ge=0, le=MAX_PIXELS, description="Requested frame height (0: camera default)."
    )
    fps: Annotated[float, ZeroOr(0.01, "the camera's own")] = Field(
        0,
        ge=0,
        le=1000,
        description="Requested camera frame rate (0: camera default); a video file is "
        "played at this rate.",
    )
    loop: bool = Field(False, description="Loop a video file when it ends (demos, tests).")
    realtime: bool = Field(
        True, description="Play a video file at its own frame rate, as a camera would deliver it."
    )
    retry_initial: float = Field(
        1.0, ge=0.01, le=MAX_WAIT, description="First retry delay after a failure (s)."
    )
    retry_max: float = Field(30.0, ge=0.01, le=MAX_WAIT, description="Longest retry delay (s).")
    read_timeout: float = Field(
        5.0,
        ge=0.1,
        le=600,
        description="No frame for this long counts as a failed source (s); also the open "
        "and read timeout of a network stream.",
    )


class DetectorSettings(Section):
    scale_factor: float = Field(1.2, gt=1.0, le=3.0, description="Haar cascade scale step.")
    min_neighbors: int = Field(5, ge=0, le=100, description="Haar cascade minNeighbors.")
    min_size: float = Field(
        0.1, ge=0.01, le=1, description="Smallest face, as a fraction of the shorter frame side."
    )
    max_width: Annotated[int, ZeroOr(32, "never")] = Field(
        320,
        ge=0,
        le=MAX_PIXELS,
        description="Downscale frames wider than this before detection (0: never).",
    )
    track: bool = Field(
        True,
        description="Follow faces from frame to frame: most frames scan only near the last "
        "face (much less CPU). Off: a full scan every frame (steadiest boxes).",
    )
    motion: bool = Field(
        True,
        description="Scan for new faces only where the picture changed (with track on): an "
        "empty, still room costs almost nothing. Off: a full scan every frame while no face "
        "is followed (the behaviour before the motion gate).",
    )
    full_scan_interval: float = Field(
        5.0,
        ge=0.2,
        le=600,
        description="With motion on, scan the whole frame at least this often (s), spread "
        "over a few frames, so a face that arrived unseen (turned away, then still) is found.",
    )

    def full_scan_frames(self, fps: float) -> int:
        """``full_scan_interval`` in frames at ``fps`` (at least one)."""
        return max(1, round(self.full_scan_interval * fps))


class ModelSettings(Section):
    path: Path = Field(Path("trainer.yml"), description="The LBPH model file to watch and load.")
    labels: list[str] | None = Field(
        None,
        description="Class names by id, for a model without names inside (a workshop "
        "trainer.yml). Default: the workshop's anger, happy, sad, neutral, surprise.",
    )
    poll_interval: float = Field(
        1.0, ge=0.01, le=MAX_WAIT, description="How often to check the file (s)."
    )
    max_size_mb: float = Field(
        160.0,
        gt=0,
        le=4000,
        description="Refuse a model file bigger than this, unread (MB of 1,000,000 bytes). "
        "The workshop's own text models are 60-150 MB, edged's a few MB; raise it only for "
        "a bigger model you trust (it costs memory and load time).",
    )

    @property
    def max_bytes(self) -> int:
        """``max_size_mb`` in bytes, as `load_model` and `ModelStore` take it."""
        return int(self.max_size_mb * 1_000_000)


class EnrollSettings(Section):
    """Enrolled faces (edged enroll): crops of the people this camera sees, on this device."""

    store: Path | None = Field(
        None,
        description="Folder of the enrolled face crops (0700, one folder per person). "
        "Default: 'enrolled' beside model.path (/var/lib/edged/enrolled for the service).",
    )


class LoopSettings(Section):
    fps: float = Field(5.0, ge=0.01, le=120, description="Target frames processed per second.")
    stats_interval: float = Field(
        30.0, ge=0.1, le=MAX_PERIOD, description="Seconds between stats reports."
    )
    max_faces: int = Field(
        5, ge=1, le=100, description="Classify at most this many faces per frame."
    )
    duration: float = Field(
        0.0,
        ge=0,
        le=MAX_DURATION,
        description="Stop by itself after this many seconds (0: run until stopped).",
    )


class OutputSettings(Section):
    stdout: bool = Field(False, description="Print each frame's result as a JSON line on stdout.")


class PrivacySettings(Section):
    """The privacy switch (expression detection ON/OFF): its state outlives a restart."""

    state_file: Path | None = Field(
        None,
        description="Where the switch's state is kept, so OFF survives a restart or a "
        "reboot; written only when the switch changes. Default: 'detect.state' in the "
        "service's state directory ($STATE_DIRECTORY: /var/lib/edged); outside systemd, "
        "not kept (the switch starts ON) unless this is set.",
    )


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")


def _plain_topic(value: str) -> str:
    # paho refuses wildcards only at publish time, which would stop MQTT for good long
    # after start-up: refuse them here, where the person can see it.
    if not value or any(c in value for c in "#+\x00"):
        raise ValueError("must be a plain MQTT topic, without the wildcards + and #")
    return value


Topic = Annotated[str, AfterValidator(_plain_topic)]


def _plain_host(value: str) -> str:
    # A URL here ("mqtt://user:pass@broker") would put its password into every log line
    # that names the broker; the credentials have their own settings.
    if any(c in value for c in "/@ \t") or "://" in value:
        raise ValueError("must be a host name or address, not a URL (user and password "
                         "go in mqtt.username and mqtt.password_file)")  # fmt: skip
    return value


Host = Annotated[str, AfterValidator(_plain_host)]


class MqttSettings(Section):
    enabled: bool = Field(True, description="Publish over MQTT.")
    host: Host = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    keepalive: int = Field(
        60, ge=5, le=65535, description="MQTT keepalive (s); MQTT's field holds at most 65535."
    )
    qos: int = Field(1, ge=0, le=2, description="QoS for state, events and availability.")
    prefix: Topic = Field("edged", description="Topic prefix (no + or #).")
    device_id: str = Field(
        default_factory=lambda: socket.gethostname().split(".")[0],
        min_length=1,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="This device's id in topics and discovery (default: the hostname); "
        "letters, digits, '_' and '-' only.",
    )
    client_id: str | None = Field(None, description="MQTT client id (default: edged-<device_id>).")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(
        None, description="Broker password; prefer password_file or systemd credentials."
    )
    password_file: Path | None = Field(
        None,
        description="File holding the broker password. Without it, a systemd credential "
        "named 'mqtt_password' ($CREDENTIALS_DIRECTORY/mqtt_password) is used if present.",
    )
    tls: bool = Field(False, description="Connect with TLS (implied by ca_file or certfile).")
    ca_file: Path | None = Field(
        None, description="CA certificate(s) to verify the broker with (default: system CAs)."
    )
    certfile: Path | None = Field(None, description="Client certificate, for brokers that ask.")
    keyfile: Path | None = Field(None, description="Client certificate's private key.")
    tls_insecure: bool = Field(
        False, description="Skip verifying the broker's certificate and host name (unsafe)."
    )
    reconnect_min: float = Field(
        1.0, ge=0.01, le=MAX_WAIT, description="First reconnect delay (s)."
    )
    reconnect_max: float = Field(
        60.0,
        ge=0.01,
        le=MAX_WAIT,
        description="Longest reconnect delay (s); the delay doubles up to it.",
    )

    @model_validator(mode="after")
    def _check_tls(self) -> MqttSettings:
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile needs certfile")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be less than reconnect_min")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca_file is not None or self.certfile is not None


class PublishSettings(Section):
    """What goes over MQTT and how often; the defaults suit a Home Assistant dashboard."""

    heartbeat: float = Field(
        60.0,
        ge=0.1,
        le=MAX_WAIT,
        description="Re-publish the state at least this often (s), even unchanged.",
    )
    clear_after: float = Field(
        3.0,
        ge=0,
        le=MAX_WAIT,
        description="State becomes 'none' when no face has been seen for this long (s).",
    )
    detections: bool = Field(
        True, description="Publish every processed frame's faces on the 'detections' topic."
    )
    snapshot: bool = Field(
        False,
        description="Publish an annotated JPEG of the camera view on the 'snapshot' topic. "
        "Off (the default): no image ever leaves the device.",
    )
    snapshot_interval: float = Field(
        10.0, ge=0.1, le=MAX_PERIOD, description="Seconds between snapshots (when snapshot is on)."
    )


class SmoothingSettings(Section):
    """Debounce: a new expression counts only once enough recent frames agree."""

    enabled: bool = Field(True, description="Off: every frame's top expression is the state.")
    window: int = Field(5, ge=1, le=100, description="N: how many recent frames are considered.")
    agree: int = Field(3, ge=1, le=100, description="K: frames of the window that must agree.")
    min_hold: float = Field(
        0.0,
        ge=0,
        le=MAX_WAIT,
        description="Also accept an expression held (every frame) for this long (s); 0: off.",
    )
    threshold: float = Field(
        0.3, ge=0, le=1, description="Frames below this confidence (0..1) do not count."
    )

    @model_validator(mode="after")
    def _check_window(self) -> SmoothingSettings:
        if self.agree > self.window:
            raise ValueError(f"agree ({self.agree}) must not exceed window ({self.window})")
        return self


class HomeAssistantSettings(Section):
    discovery: bool = Field(True, description="Announce entities with Home Assistant discovery.")
    prefix: Topic = Field("homeassistant", description="Discovery topic prefix.")
    status_topic: Topic = Field(
        "homeassistant/status",
        description="Home Assistant's birth topic: discovery is re-sent when it says 'online'.",
    )
    device_name: str | None = Field(
        None, description="Device name shown in Home Assistant (default: 'edged <device_id>')."
    )


def _bind_address(value: str) -> str:
    """An IP address to listen on (``0.0.0.0`` or ``::``: every interface), not a name."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(
            "must be an IP address to listen on, e.g. 127.0.0.1 (this machine only), "
            "0.0.0.0 (every IPv4 interface) or ::"
        ) from None


def _host_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*", name):
        raise ValueError(f"{value!r} is not a host name (letters, digits, '-' and dots)")
    return name


BindAddress = Annotated[str, AfterValidator(_bind_address)]
HostName = Annotated[str, AfterValidator(_host_name)]


class HttpSettings(Section):
    """The local web page: live view, state, events, stats, the privacy switch; its JSON
    API (/api/state, /api/stats), /healthz and Prometheus /metrics. See README, Web page."""

    enabled: bool = Field(True, description="Serve the page (only while edged run runs).")
    bind: BindAddress = Field(
        "127.0.0.1",
        description="Address to listen on. The default is this machine only; any other "
        "address needs a password (password_file or the http_password credential).",
    )
    port: int = Field(
        8426, ge=0, le=65535, description="TCP port (0: any free port, logged at start)."
    )
    username: str = Field(
        "edged", min_length=1, max_length=64, pattern=r"^[^:\s]+$",
        description="User name for the page's password (HTTP basic auth).",
    )  # fmt: skip
    password: SecretStr | None = Field(
        None, description="The page's password; prefer password_file or systemd credentials."
    )
    password_file: Path | None = Field(
        None,
        description="File holding the page's password. Without it, a systemd credential "
        "named 'http_password' ($CREDENTIALS_DIRECTORY/http_password) is used if present.",
    )
    hostnames: list[HostName] = Field(
        default_factory=list,
        description="Extra host names the page answers to (e.g. 'edged.lan'), besides "
        "localhost, this machine's name and IP addresses; others are refused (DNS rebinding).",
    )
    max_viewers: int = Field(3, ge=1, le=32, description="Live views at once; more get '503 busy'.")
    stream_fps: float = Field(
        5.0,
        ge=0.01,
        le=30,
        description="Highest frame rate of the live view (never above loop.fps).",
    )
    jpeg_quality: int = Field(75, ge=10, le=95, description="JPEG quality of the live view.")
    request_timeout: float = Field(
        10.0, ge=0.5, le=300, description="Drop a client that sends or reads nothing this long (s)."
    )
    cert_file: Path | None = Field(
        None, description="TLS certificate (PEM) to serve HTTPS, for a LAN without a proxy."
    )
    key_file: Path | None = Field(None, description="The TLS certificate's private key (PEM).")

    @model_validator(mode="after")
    def _check_tls(self) -> HttpSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    @property
    def loopback(self) -> bool:
        """Only this machine can connect."""
        return ipaddress.ip_address(self.bind).is_loopback

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def _config_text(path: Path, data: bytes) -> str:
    """The file's text: UTF-8, as TOML requires (a leading BOM, as some editors add, is
    dropped); anything else is a `ConfigError` naming the file and the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {data[e.start]:#04x} on line {line}, "
            f"column {column}: saved as Latin-1 or UTF-16?); save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"config file {path} is not UTF-8 text (it holds NUL bytes: UTF-16?)")
    return text.removeprefix("\ufeff")


def _toml_source(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        return tomllib.loads(_config_text(path, data))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


class Settings(BaseSettings):
    """The whole configuration, one attribute per section."""

    model_config = SettingsConfigDict(
        env_prefix="EDGED_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    camera: CameraSettings = Field(default_factory=CameraSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    enroll: EnrollSettings = Field(default_factory=EnrollSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    smoothing: SmoothingSettings = Field(default_factory=SmoothingSettings)
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init) > environment > the TOML file (see load_settings) > defaults.
        return (init_settings, env_settings, InitSettingsSource(settings_cls, _FILE_VALUES.get()))

    @model_validator(mode="after")
    def _default_store(self) -> Settings:
        # Beside the model, wherever the model is: the service's state directory.
        if self.enroll.store is None:
            self.enroll.store = self.model.path.parent / "enrolled"
        return self

    @model_validator(mode="after")
    def _default_switch_file(self) -> Settings:
        # systemd's StateDirectory= sets $STATE_DIRECTORY (the unit's /var/lib/edged).
        state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if self.privacy.state_file is None and state_dir:
            self.privacy.state_file = Path(state_dir) / SWITCH_FILE
        return self


def _nested(values: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = values
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _origin(
    loc: tuple[Any, ...],
    config: Path | None,
    file_values: dict[str, Any],
    overrides: dict[str, Any],
    environ: Mapping[str, str],
) -> str:
    """Which source gave a field its (bad) value: the highest one that sets it."""
    if _nested(overrides, loc):
        return " (command line)"
    if len(loc) == 2:
        var = f"EDGED_{loc[0]}__{loc[1]}".upper()
        if any(k.upper() == var for k in environ):
            return f" (environment {var})"
    if config is not None and _nested(file_values, loc):
        return f" ({config})"
    return ""


def format_validation_error(
    err: ValidationError,
    where: Callable[[tuple[Any, ...]], str] | None = None,
    more: list[str] | None = None,
) -> str:
    """One line per bad field: ``section.key = value (source): reason`` (and ``more``)."""
    lines = list(more or [])
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        origin = where(tuple(e["loc"])) if where else ""
        if e["type"] == "extra_forbidden":
            lines.append(f"{loc}{origin}: unknown setting")
            continue
        value = e.get("input")
        msg = e["msg"].removeprefix("Value error, ")
        if isinstance(value, dict):  # a check across a section's fields: no single value
            lines.append(f"{loc}: {msg}")
            continue
        shown = "***" if any(secret_name(str(p)) for p in e["loc"]) else repr(value)
        if isinstance(value, str) and "@" in value:  # user:password@host, with or without a scheme
            shown = repr("***@" + value.rsplit("@", 1)[1])
        lines.append(f"{loc} = {shown}{origin}: {msg}")
    return redact("invalid configuration:\n  " + "\n  ".join(lines))


def _given_secrets(values: Any, name: str = "") -> set[str]:
    """Secret values among raw, unvalidated settings (nested dicts, lists, strings): those
    under a secret-looking key, and the passwords of URLs anywhere. For error messages
    about settings that did not load, which may quote them."""
    if isinstance(values, Mapping):
        return {s for k, v in values.items() for s in _given_secrets(v, str(k))}
    if isinstance(values, list | tuple):
        return {s for v in values for s in _given_secrets(v, name)}
    if values is None or isinstance(values, bool):
        return set()
    text = values.get_secret_value() if isinstance(values, SecretStr) else str(values)
    found = url_secrets(text)
    key = name.rsplit("__", 1)[-1]  # EDGED_MQTT__PASSWORD: PASSWORD
    if secret_value_name(key) and not key.lower().endswith("_file"):
        found.add(text)
    return found


def register_secrets(settings: Settings) -> None:
    """Remember every secret the settings hold (`edged.redact`): hidden from now on in
    every log line, error and payload, wherever it appears."""
    for name, _ in _section_fields():
        for value in dict(getattr(settings, name)).values():
            if isinstance(value, SecretStr):
                register_secret(value.get_secret_value())
    register_source(settings.camera.source)


# EDGED_* variables edged reads that are not settings (none of them is read by `edged run`).
NOT_SETTINGS = frozenset({"EDGED_SCREENSHOT"})  # tests/test_web_browser.py: README screenshots


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """An error line for each ``EDGED_*`` variable that names no section: pydantic-settings
    would ignore ``EDGED_CAMRA__SOURCE`` silently (a misspelt key of a known section,
    ``EDGED_CAMERA__SOURSE``, it reports itself)."""
    sections = {name for name, _ in _section_fields()}
    lines = []
    for var in sorted(environ):
        name = var.upper()
        if not name.startswith("EDGED_") or name in NOT_SETTINGS:
            continue
        section, _, key = name.removeprefix("EDGED_").partition("__")
        if section.lower() not in sections:
            where = f"{section.lower()}.{key.lower()}" if key else section.lower() or "(empty)"
            lines.append(f"{where} (environment {var}): unknown setting (sections: "
                         f"{', '.join(sorted(sections))})")  # fmt: skip
    return lines


def load_settings(config: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from defaults < TOML ``config`` < environment < ``overrides`` (CLI flags).

    ``overrides`` is nested like the TOML file: ``{"camera": {"source": "clip.mp4"}}``.
    """
    file_values = _toml_source(config)
    unknown = unknown_environment(os.environ)
    token = _FILE_VALUES.set(file_values)
    try:
        settings = Settings(**(overrides or {}))
    except SettingsError as e:  # e.g. an EDGED_MQTT='{...' variable that is not JSON
        cause = f": {e.__cause__}" if e.__cause__ else ""
        text = f"invalid configuration: {e}{cause}"
        raise ConfigError(_redacted(text, file_values, overrides)) from None
    except ValidationError as e:
        where = functools.partial(
            _origin, config=config, file_values=file_values, overrides=overrides or {},
            environ=os.environ,
        )  # fmt: skip
        text = format_validation_error(e, where, unknown)
        raise ConfigError(_redacted(text, file_values, overrides)) from None
    finally:
        _FILE_VALUES.reset(token)
    if unknown:
        raise ConfigError(redact("invalid configuration:\n  " + "\n  ".join(unknown)))
    register_secrets(settings)
    return settings


def _redacted(text: str, file_values: dict[str, Any], overrides: dict[str, Any] | None) -> str:
    """An error about settings that did not load, without any secret given in them."""
    environ: dict[str, Any] = {}
    for key, value in os.environ.items():
        if key.upper().startswith("EDGED_"):
            environ[key] = value
            with contextlib.suppress(ValueError):  # EDGED_MQTT='{"password": ...}'
                environ[key + "__json"] = json.loads(value)
    given = _given_secrets([file_values, overrides or {}, environ])
    return redact(text, given)


# -- TOML output: `edged config check` (effective settings) and the example file ----------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, SecretStr):
        return '"***"'
    # A JSON string is a TOML basic string.
    return json.dumps(redact(str(value)), ensure_ascii=False)


def _section_fields() -> list[tuple[str, type[BaseModel]]]:
    out = []
    for name, info in Settings.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.append((name, ann))
    return out


def dump_toml(settings: Settings) -> str:
    """The effective settings as TOML, secrets shown as ``***``, unset values commented."""
    lines: list[str] = []
    for name, _ in _section_fields():
        section = getattr(settings, name)
        lines.append(f"[{name}]")
        for key in type(section).model_fields:
            value = getattr(section, key)
            if value is None:
                lines.append(f"# {key} = (not set)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


_EXAMPLE_HEADER = """\
# edged configuration. Every option, commented out at its default value.
# Uncomment what you change. Sources, lowest first: these defaults < this file
# (edged run --config FILE) < environment (EDGED_SECTION__KEY, e.g. EDGED_MQTT__HOST)
# < command-line flags. Unknown keys are errors. Check with: edged config check --config FILE
# Regenerate this file with: edged config example > config/edged.toml
"""


def numeric_bounds(info: FieldInfo) -> tuple[float, float, ZeroOr | None] | None:
    """A number field's (lowest, highest, 0-or-at-least rule) accepted; None if not a
    number. A ``gt`` bound (above, not at) is given as that value."""
    if not _kinds(info.annotation) & {int, float}:
        return None
    low, high, zero_or = -math.inf, math.inf, None
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge):
            low = float(cast(float, rule.ge))
        elif isinstance(rule, annotated_types.Gt):
            low = float(cast(float, rule.gt))
        elif isinstance(rule, annotated_types.Le):
            high = float(cast(float, rule.le))
        elif isinstance(rule, annotated_types.Lt):
            high = float(cast(float, rule.lt))
        elif isinstance(rule, ZeroOr):
            zero_or = rule
    return low, high, zero_or


def bounds_text(info: FieldInfo) -> str:
    """A number's accepted range in words, for the example file: "Range: 0.01 to 3600."."""
    bounds = numeric_bounds(info)
    if bounds is None:
        return ""
    low, high, zero_or = bounds
    above = any(isinstance(r, annotated_types.Gt) for r in info.metadata)
    if zero_or is not None:
        return f"Range: 0, or {zero_or.minimum:g} to {high:g}."
    if above:
        return f"Range: above {low:g}, up to {high:g}."
    return f"Range: {low:g} to {high:g}."


def example_toml() -> str:
    """An example file documenting every option (what ``config/edged.toml`` holds)."""
    lines = [_EXAMPLE_HEADER]
    for name, cls in _section_fields():
        doc = (cls.__doc__ or "").strip()
        if doc and doc != (Section.__doc__ or "").strip():
            lines.extend(f"# {line}".rstrip() for line in doc.splitlines())
        lines.append(f"[{name}]")
        for key, info in cls.model_fields.items():
            text = " ".join(filter(None, [info.description, bounds_text(info)]))
            for line in textwrap.wrap(text, 86):
                lines.append(f"# {line}")
            if info.default_factory is list:
                lines.append(f"# {key} = []")
            elif info.default_factory is not None:
                lines.append(f"# {key} = (computed on this machine)")
            elif info.default is None:
                lines.append(f"# {key} = (not set)")
            else:
                lines.append(f"# {key} = {_toml_value(info.default)}")
        lines.append("")
    return "\n".join(lines)
