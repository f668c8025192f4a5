"""Every value ``edged config check`` calls OK is safe (issue 12, item 1).

Every number has a real bound, found by introspecting the settings model (a new field
without one fails here); bools are not numbers; empty paths, NaN and infinities are
refused; an ``EDGED_*`` variable that names no setting is an error; the files ``run``
opens are opened by ``config check`` too. And at each accepted extreme, the part that
uses the value still works (Python's timed waits, paho, OpenCV, the capture thread).
"""

from __future__ import annotations

import math
import struct
import threading
import time
from pathlib import Path

import cv2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edged import cli
from edged.daemon.capture import FrameGrabber
from edged.daemon.ticker import Ticker
from edged.errors import ConfigError
from edged.settings import (
    MAX_WAIT,
    CameraSettings,
    LoopSettings,
    MqttSettings,
    Settings,
    _kinds,
    bounds_text,
    example_toml,
    load_settings,
    numeric_bounds,
)


def _sections() -> list[tuple[str, type[BaseModel]]]:
    return [
        (name, info.annotation)
        for name, info in Settings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    ]


def _fields(kind: type) -> list[tuple[str, str, FieldInfo]]:
    return [
        (section, key, info)
        for section, cls in _sections()
        for key, info in cls.model_fields.items()
        if kind in _kinds(info.annotation)
    ]


NUMBERS = [
    (s, k, i) for s, k, i in _fields(int) + _fields(float) if bool not in _kinds(i.annotation)
]
NUMBER_IDS = [f"{s}.{k}" for s, k, _ in NUMBERS]
PATHS = _fields(Path)
BOOLS = _fields(bool)

EXTREMES_TOML = ["1e300", "-1e300", "nan", "inf", "-inf", "true", "false", "-0.0", "1e-300",
                 "4294967297", "1e10"]  # fmt: skip
EXTREMES_ENV = ["1e10", "1e300", "-1e300", "nan", "inf", "-inf", "true", "1e-300", "99999999"]


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = cli.main(["config", "check", *args])
    return rc, capsys.readouterr().err


def _within(info: FieldInfo, value: float) -> bool:
    bounds = numeric_bounds(info)
    assert bounds is not None
    low, high, zero_or = bounds
    if zero_or is not None and value == 0:
        return True
    low = zero_or.minimum if zero_or is not None else low
    return math.isfinite(value) and low <= value <= high


def test_the_model_has_number_path_and_bool_settings_to_check():
    assert len(NUMBERS) >= 30 and len(PATHS) >= 9 and len(BOOLS) >= 10


@pytest.mark.parametrize(("section", "key", "info"), NUMBERS, ids=NUMBER_IDS)
def test_every_number_setting_has_finite_bounds_stated_in_the_example_file(section, key, info):
    bounds = numeric_bounds(info)
    assert bounds is not None
    low, high, _ = bounds
    assert math.isfinite(low) and math.isfinite(high), f"{section}.{key} needs ge= and le="
    assert high <= threading.TIMEOUT_MAX  # any of them may become a wait
    example = " ".join(line.removeprefix("# ") for line in example_toml().splitlines())
    assert bounds_text(info) in example


@pytest.mark.parametrize(("section", "key", "info"), NUMBERS, ids=NUMBER_IDS)
def test_every_number_setting_refuses_or_bounds_any_extreme_value(
    section, key, info, tmp_path, capsys, monkeypatch, clean_env
):
    """From the file (typed TOML values) and from the environment (strings): either exit
    78 naming the field, or an effective value within the documented bound."""
    monkeypatch.delenv("EDGED_HTTP__PORT", raising=False)  # the tests' free port: not here
    cfg = tmp_path / "edged.toml"
    var = f"EDGED_{section}__{key}".upper()
    cases: list[tuple[str, dict[str, str]]] = [
        (f"[{section}]\n{key} = {v}\n", {}) for v in EXTREMES_TOML
    ]
    cases += [("", {var: v}) for v in EXTREMES_ENV]
    for text, env in cases:
        cfg.write_text(text)
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            rc, err = _check(capsys, "--config", str(cfg))
            given = text or env
            if rc == 78:
                assert f"{section}.{key}" in err, (given, err)
                assert "Traceback" not in err
                continue
            assert rc == 0, (given, err)
            value = getattr(getattr(load_settings(cfg), section), key)
        assert not isinstance(value, bool)
        assert _within(info, value), (given, value)
        assert "true" not in text and "false" not in text, f"{given} accepted as {value!r}"
        if value == 0:
            assert math.copysign(1, value) == 1, "negative zero is made 0"


def test_a_bool_is_not_a_number_nor_a_number_a_bool_but_environment_strings_parse(
    tmp_path, monkeypatch, clean_env
):
    cfg = tmp_path / "edged.toml"
    cfg.write_text("[camera]\nwidth = true\nloop = 1\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert "camera.width = True" in str(e.value) and "not true or false" in str(e.value)
    assert "camera.loop = 1" in str(e.value) and "must be true or false" in str(e.value)
    monkeypatch.setenv("EDGED_LOOP__FPS", "2")
    monkeypatch.setenv("EDGED_CAMERA__WIDTH", "320")
    monkeypatch.setenv("EDGED_CAMERA__LOOP", "1")  # "1" from the environment is a bool
    monkeypatch.setenv("EDGED_MQTT__ENABLED", "false")
    s = load_settings()
    assert (s.loop.fps, s.camera.width, s.camera.loop, s.mqtt.enabled) == (2.0, 320, True, False)


@pytest.mark.parametrize(
    ("section", "key"), [(s, k) for s, k, _ in PATHS], ids=[f"{s}.{k}" for s, k, _ in PATHS]
)
@pytest.mark.parametrize("value", ["", "  ", "."])
def test_every_path_setting_refuses_an_empty_path(section, key, value, tmp_path, clean_env):
    cfg = tmp_path / "edged.toml"
    cfg.write_text(f'[{section}]\n{key} = "{value}"\n')
    with pytest.raises(ConfigError, match=rf"{section}\.{key} = .*must not be empty"):
        load_settings(cfg)


@pytest.mark.parametrize(
    "var",
    ["EDGED_CAMRA__SOURCE", "EDGED_CAMERA__SOURSE", "EDGED_CAMRA", "EDGED_", "edged_camra__source"],
)
def test_an_edged_variable_that_names_no_setting_exits_78_naming_it(
    var, capsys, monkeypatch, clean_env
):
    monkeypatch.setenv(var, "clip.mp4")
    rc, err = _check(capsys)
    assert rc == 78, err
    assert f"(environment {var})" in err and "unknown setting" in err
    assert "clip.mp4" not in err  # a value may be a secret: only the name is shown


def test_edged_variables_that_are_not_settings_and_whole_sections_are_accepted(
    capsys, monkeypatch, clean_env
):
    monkeypatch.setenv("EDGED_SCREENSHOT", "docs/web-page.png")  # the README's screenshots
    monkeypatch.setenv("EDGED_MQTT", '{"host": "broker.lan"}')  # a whole section as JSON
    rc, err = _check(capsys)
    assert rc == 0, err
    assert load_settings().mqtt.host == "broker.lan"


def test_an_unknown_variable_is_reported_with_the_bad_values_beside_it(monkeypatch, clean_env):
    monkeypatch.setenv("EDGED_CAMRA__SOURCE", "x")
    monkeypatch.setenv("EDGED_LOOP__FPS", "0")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "camra.source (environment EDGED_CAMRA__SOURCE)" in str(e.value)
    assert "loop.fps = '0' (environment EDGED_LOOP__FPS)" in str(e.value)


# -- the files `run` opens: `config check` opens them too ------------------------------


@pytest.fixture
def not_a_cert(tmp_path: Path) -> Path:
    p = tmp_path / "not-a-cert.pem"
    p.write_text("hello\n")
    return p


@pytest.mark.parametrize(
    ("setting", "make", "field"),
    [
        ("ca_file", "missing", "mqtt.ca_file"),
        ("ca_file", "garbage", "mqtt.ca_file"),
        ("certfile", "missing", "mqtt.certfile"),
        ("certfile", "garbage", "mqtt.certfile"),
        ("password_file", "missing", "mqtt.password_file"),
        ("password_file", "folder", "mqtt.password_file"),
        ("password_file", "latin1", "mqtt.password_file"),
    ],
)
def test_a_missing_or_unusable_mqtt_file_fails_config_check_naming_the_field(
    setting, make, field, tmp_path, capsys, monkeypatch, clean_env
):
    path = tmp_path / "f"
    if make == "garbage":
        path.write_text("not a certificate\n")
    elif make == "folder":
        path.mkdir()
    elif make == "latin1":
        path.write_bytes(b"p\xe4ss\n")
    monkeypatch.setenv(f"EDGED_MQTT__{setting.upper()}", str(path))
    rc, err = _check(capsys)
    assert rc == 78, err
    assert err.startswith(f"edged: error: {field}") and str(path) in err
    assert "Traceback" not in err


def test_working_mqtt_tls_and_password_files_pass_config_check(
    tmp_path, capsys, monkeypatch, clean_env
):
    import ssl

    ca = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    if not Path(ca).is_file():
        pytest.skip("no system CA bundle")
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    monkeypatch.setenv("EDGED_MQTT__CA_FILE", ca)
    monkeypatch.setenv("EDGED_MQTT__PASSWORD_FILE", str(pw))
    rc, err = _check(capsys)
    assert rc == 0, err


# -- at each accepted extreme, the part that uses it still works ------------------------


def _wait_bounds() -> dict[str, float]:
    """The upper bound of every setting that becomes a timed wait."""
    waits = {
        "camera.retry_initial", "camera.retry_max", "camera.read_timeout",
        "model.poll_interval", "mqtt.reconnect_min", "mqtt.reconnect_max",
        "publish.heartbeat", "publish.clear_after", "smoothing.min_hold",
        "http.request_timeout", "loop.stats_interval", "publish.snapshot_interval",
    }  # fmt: skip
    out = {}
    for section, key, info in NUMBERS:
        if f"{section}.{key}" in waits:
            bounds = numeric_bounds(info)
            assert bounds is not None
            out[f"{section}.{key}"] = bounds[1]
    assert len(out) == len(waits)
    return out


def test_the_longest_accepted_wait_is_one_pythons_timed_waits_take():
    """Event.wait / Lock.acquire overflow above threading.TIMEOUT_MAX (camera.retry_initial
    = 1e10 killed the capture thread): each bound is a legal wait, 1e10 is not."""
    lock = threading.Lock()
    for name, bound in _wait_bounds().items():
        assert lock.acquire(timeout=bound), name  # validated even when free
        lock.release()
    with pytest.raises(OverflowError):
        lock.acquire(timeout=1e10)
    waited: list[bool] = []
    event = threading.Event()
    t = threading.Thread(target=lambda: waited.append(event.wait(MAX_WAIT)))
    t.start()
    time.sleep(0.05)
    event.set()
    t.join(2)
    assert waited == [True]


def test_the_slowest_accepted_loop_rate_gives_a_legal_tick_wait():
    low = numeric_bounds(LoopSettings.model_fields["fps"])
    assert low is not None
    ticker = Ticker(low[0], 0.0)
    ticker.done(0.0)
    assert 0 < ticker.delay(0.0) <= threading.TIMEOUT_MAX


def test_the_longest_accepted_keepalive_is_sent_to_a_real_broker(broker):
    """MQTT's keepalive is a 16-bit field: 100000 killed paho's thread."""
    with pytest.raises(struct.error):
        struct.pack("!H", 100000)
    bounds = numeric_bounds(MqttSettings.model_fields["keepalive"])
    assert bounds is not None and bounds[1] == 65535
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edged-test-keepalive")
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect(broker.host, broker.port, keepalive=int(bounds[1]))
    client.loop_start()
    try:
        assert connected.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_longest_accepted_read_timeout_is_an_opencv_stream_timeout():
    """read_timeout becomes OpenCV's open/read timeout in ms, a C int: 1e10 s was not."""
    bounds = numeric_bounds(CameraSettings.model_fields["read_timeout"])
    assert bounds is not None
    ms = int(bounds[1] * 1000)
    assert ms < 2**31
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    cap = cv2.VideoCapture("/nonexistent/stream.mp4", cv2.CAP_FFMPEG, params)  # no error
    assert not cap.isOpened()
    with pytest.raises(cv2.error):
        cv2.VideoCapture("/nonexistent/stream.mp4", cv2.CAP_FFMPEG, [params[0], 10**13])


def test_the_capture_thread_waits_out_the_longest_accepted_retry_and_stops_at_once(clean_env):
    """camera.retry_initial = 1e10 killed the capture thread at its first retry."""
    s = load_settings(None, {"camera": {"source": "/dev/video-none", "retry_initial": MAX_WAIT,
                                         "retry_max": MAX_WAIT}})  # fmt: skip
    states: list[tuple[bool, str]] = []
    fatal: list[str] = []
    g = FrameGrabber(s.camera, on_state=lambda on, why: states.append((on, why)),
                     on_fatal=fatal.append)  # fmt: skip
    g.start()
    try:
        deadline = time.monotonic() + 5
        while not states and time.monotonic() < deadline:
            time.sleep(0.01)
        assert states and states[0][0] is False
        time.sleep(0.1)  # now in its hour-long wait
        alive = [t for t in threading.enumerate() if t.name.startswith("edged-capture")]
        assert alive and not fatal
    finally:
        t0 = time.monotonic()
        g.stop()
        assert time.monotonic() - t0 < 2
