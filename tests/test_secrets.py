"""Secrets never leave the process: the redaction rules, and every output of a real run.

The rules (`edged.redact`) are checked on a table of forms; the family test runs the real
daemon and commands with a secret in every place one can be configured (the camera URL's
user info and query, the TOML file, the environment, a password file, a systemd
credential, a bad command-line flag) and scans everything they printed or published.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from edged import cli
from edged.errors import RedactingArgumentParser
from edged.mqtt.client import resolve_password
from edged.redact import (
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_arguments,
    redact_credentials,
    redact_secrets,
    register_secret,
    url_secrets,
)
from edged.settings import load_settings
from edged.training import trainer

# -- the rules ----------------------------------------------------------------------------

REDACTED = [
    # user info, every awkward password
    ("rtsp://admin:secret@10.0.0.5/live", "rtsp://***@10.0.0.5/live"),
    ("rtsp://u:p/w d@host:554/path?x=1", "rtsp://***@host:554/path?x=1"),
    ("rtsp://admin:p@ss@cam/stream", "rtsp://***@cam/stream"),
    ("http://u:pa#ss@cam/x", "http://***@cam/x"),
    ("http://u:a:b@cam:8080/x", "http://***@cam:8080/x"),
    ("http://u:with space@cam/x", "http://***@cam/x"),
    ("rtsp://just-a-token@cam/x", "rtsp://***@cam/x"),
    ("rtsp://u:p@[fe80::1]:554/x", "rtsp://***@[fe80::1]:554/x"),
    # the documented price: an '@' in a path reads as the end of user info
    ("http://cam/a@b", "http://***@b"),
    # query and fragment parameters, '&' and ';' separated, any case
    ("http://cam/video?user=admin&pwd=S3cret&res=640", "http://cam/video?user=***&pwd=***&res=640"),
    ("http://cam/v#access_token=abc&x=1", "http://cam/v#access_token=***&x=1"),
    ("http://cam/v?a=1;PWD=x;b=2", "http://cam/v?a=1;PWD=***;b=2"),
    ("http://cam/v?ApiKey=k1&SIG=s&Api_Key=k2", "http://cam/v?ApiKey=***&SIG=***&Api_Key=***"),
    (
        "http://u:p/w@cam/v?token=t#secret=s",
        "http://***@cam/v?token=***#secret=***",
    ),
    # inside a GStreamer pipeline: the URL and the elements' own properties
    (
        "rtspsrc location=rtsp://admin:s3cret@cam:554/x latency=0 ! decodebin ! appsink",
        "rtspsrc location=rtsp://***@cam:554/x latency=0 ! decodebin ! appsink",
    ),
    (
        'rtspsrc location=rtsp://cam/x?token=abc user-id=admin user-pw="p w" ! appsink',
        'rtspsrc location=rtsp://cam/x?token=*** user-id=*** user-pw="***" ! appsink',
    ),
    # inside an error message, two URLs, several lines
    (
        "cannot open stream http://u:p/w d@cam/v?token=abc (unreachable, wrong address?)",
        "cannot open stream http://***@cam/v?token=*** (unreachable, wrong address?)",
    ),
    ("http://a:b@h/x and rtsp://c:d@k/y", "http://***@h/x and rtsp://***@k/y"),
    ("http://a:b@h/x\nmail ops@example.com", "http://***@h/x\nmail ops@example.com"),
    (
        "input_value='rtsp://u:p@h/x', input_type=str",
        "input_value='rtsp://***@h/x', input_type=str",
    ),
]


@pytest.mark.parametrize(("text", "shown"), REDACTED, ids=[t for t, _ in REDACTED])
def test_credentials_are_hidden_in_every_form(text: str, shown: str) -> None:
    assert redact_credentials(text) == shown


@pytest.mark.parametrize(
    "name",
    [
        "user", "username", "login", "pwd", "pass", "passwd", "password", "token",
        "access_token", "key", "apikey", "api_key", "auth", "secret", "sig", "signature",
        "credential", "credentials", "client_secret", "userPassword", "X-Amz-Signature",
    ],
)  # fmt: skip
def test_every_secret_parameter_name_is_hidden_in_any_case(name: str) -> None:
    for spelled in (name, name.upper()):
        url = f"http://cam/v?res=640&{spelled}=hush&fps=5"
        assert redact_credentials(url) == f"http://cam/v?res=640&{spelled}=***&fps=5"


SAFE = [
    "http://cam.local/video.mjpg",
    "rtsp://10.0.0.5:554/live?channel=1&subtype=0",
    "http://cam/v?keyframe=1&author=me&signal=3&monkey=4",
    "rtsp://[fe80::1]:554/x",
    "file:///srv/edged/u@x/clip.avi",
    "/dev/video0",
    "0",
    "clip.avi",
    "frames/img_%04d.jpg",
    "v4l2src ! videoconvert ! appsink",
    "picamera2",
    'password = "***"',
    "camera offline: no camera at /dev/video9: device does not exist",
]


@pytest.mark.parametrize("text", SAFE)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact_credentials(text) == text


def test_known_secrets_are_hidden_verbatim_and_url_encoded() -> None:
    secret = "U5er/Pa ss#9"
    text = f"a {secret} b {urllib.parse.quote(secret, safe='')} c"
    assert redact_secrets(text, [secret]) == "a *** b *** c"
    assert redact_secrets("the word pw stays", ["pw"]) == "the word pw stays"  # too short
    # Longest first: a secret holding another is hidden whole.
    assert redact_secrets("xx-long-secret-xx", ["long", "long-secret"]) == "xx-***-xx"


def test_a_sources_secrets_are_its_passwords_and_secret_values_not_user_names() -> None:
    source = "http://cam-user:U5er/Pa ss#9@127.0.0.1/v?user=admin&pwd=S3cret pw&res=640"
    assert url_secrets(source) == {"U5er/Pa ss#9", "S3cret", "S3cret pw"}
    assert url_secrets("rtspsrc location=rtsp://cam/x?token=abcd ! appsink") == {"abcd"}
    assert url_secrets("/dev/video0") == set()


def test_a_registered_secret_is_hidden_everywhere_redact_is_used() -> None:
    register_secret("Reg-istered-77")
    assert redact("a library said: Reg-istered-77 is wrong") == "a library said: *** is wrong"


def test_the_log_filter_hides_secrets_in_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = logging.Logger("edged.test_secrets")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    install_log_redaction(logger)
    install_log_redaction(logger)  # once only
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    url = "rtsp://u:Tb-secret-1@cam/x?token=Tb-secret-2"
    logger.warning("opening %s", url)
    try:
        raise RuntimeError(f"backend cannot open {url}")
    except RuntimeError:
        logger.exception("failed")
    text = stream.getvalue()
    assert "Tb-secret" not in text
    assert "opening rtsp://***@cam/x?token=***" in text
    assert "RuntimeError: backend cannot open rtsp://***@cam/x?token=***" in text


def test_a_password_read_from_a_file_is_hidden_from_then_on(tmp_path: Path, clean_env) -> None:
    password_file = tmp_path / "mqtt_password"
    password_file.write_text("Filed-pw-1122\n")
    settings = load_settings(None, {"mqtt": {"password_file": str(password_file)}})
    assert redact("x Filed-pw-1122 y") == "x Filed-pw-1122 y"  # not read yet: not known
    assert resolve_password(settings.mqtt, environ={}) == "Filed-pw-1122"
    assert redact("x Filed-pw-1122 y") == "x *** y"


# -- the command line ---------------------------------------------------------------------


def _parsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [p]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_edged_and_edged_train_parser_redacts_its_errors() -> None:
    parsers = _parsers(cli.build_parser()) + _parsers(trainer.build_parser())
    assert len(parsers) >= 9  # edged, its commands, config's actions, edged-train
    assert all(isinstance(p, RedactingArgumentParser) for p in parsers)


BAD_FLAGS = [
    (cli.main, ["run", "--password", "x"], "unrecognized arguments: --password ***"),
    (cli.main, ["run", "--password=x"], "unrecognized arguments: --password=***"),
    (cli.main, ["run", "--mqtt-pwd", "a b c", "--fps", "2"], "arguments: --mqtt-pwd ***"),
    (cli.main, ["--api-key", "k", "run"], "argument COMMAND: invalid choice: '***'"),
    (cli.main, ["config", "check", "--token", "t0"], "unrecognized arguments: --token ***"),
    (cli.main, ["run", "--secret"], "unrecognized arguments: --secret"),
    (trainer.main, ["data", "--passwd", "x"], "unrecognized arguments: --passwd ***"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("main", "argv", "said"), BAD_FLAGS, ids=[" ".join(a) for _, a, _ in BAD_FLAGS]
)
def test_a_secret_given_to_an_unknown_option_is_never_echoed(main, argv, said, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert said in err
    flag = next(i for i, a in enumerate(argv) if secret_flag(a))
    value = argv[flag].partition("=")[2] or (argv[flag + 1] if flag + 1 < len(argv) else "")
    if value:
        assert not re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", err), err


def secret_flag(arg: str) -> bool:
    return bool(re.match(r"--[\w-]*(pass|pwd|secret|token|key)", arg))


def test_an_error_raised_by_hand_hides_the_word_after_a_secret_option() -> None:
    assert redact_arguments("bad: --password hush now", []) == "bad: --password *** now"


# -- the family: every output of real runs with secrets configured everywhere ---------------

CAMERA_USER = "cam-user-q9"
SECRETS = {
    "camera URL password (with '/', ' ' and '#')": "U5er/Pa ss#9",
    "camera URL pwd= parameter": "S3cret-pw-123",
    "camera URL fragment token": "Fr4g-token-321",
    "camera URL user name": CAMERA_USER,
    "mqtt.password in the TOML file": "Toml-pw-4242",
    "EDGED_MQTT__PASSWORD": "Env-pw-5353",
    "mqtt.password_file": "File-pw-6464",
    "systemd credential mqtt_password": "Cred-pw-7575",
    "--password flag": "Flag-pw-8686",
    "--mqtt-password= flag": "Flag-pw-9797",
}


def _edged(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *argv],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_no_secret_reaches_any_output_of_a_run(
    tmp_path: Path, http_dir, broker, collector, device_id, clean_env
) -> None:
    """Secrets in every place they can be configured; every output scanned: stdout (JSON
    lines), stderr (the log, errors), every MQTT message (retained stats with
    camera.reason), ``edged config check`` (good and bad files), bad command lines."""
    _, base = http_dir  # a real HTTP server that has no video at all
    host_port = base.removeprefix("http://")
    source = (
        f"http://{CAMERA_USER}:U5er/Pa ss#9@{host_port}/video"
        "?user=admin&pwd=S3cret-pw-123&res=640#token=Fr4g-token-321"
    )
    mqtt = f'host = "{broker.host}"\nport = {broker.port}\ndevice_id = "{device_id}"\n'
    camera = f"[camera]\nsource = {json.dumps(source)}\nretry_initial = 0.1\nretry_max = 0.2\n"
    with_password = tmp_path / "with-password.toml"
    with_password.write_text(
        f'{camera}[mqtt]\n{mqtt}username = "edge"\npassword = "Toml-pw-4242"\n'
    )
    password_file = tmp_path / "mqtt_password"
    password_file.write_text("File-pw-6464\n")
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt_password").write_text("Cred-pw-7575")
    with_file = tmp_path / "with-file.toml"
    with_file.write_text(
        f'{camera}[mqtt]\n{mqtt}username = "edge"\npassword_file = "{password_file}"\n'
    )
    bad = tmp_path / "bad.toml"  # values that fail validation, quoted back in the error
    bad.write_text(
        f"[camera]\nsource = [{json.dumps(source)}]\n[mqtt]\npassword = ['Toml-pw-4242']\n"
        "[loop]\nfps = 0\n"
    )
    env = {**os.environ, "EDGED_MQTT__PASSWORD": "Env-pw-5353", "CREDENTIALS_DIRECTORY": str(creds)}
    env.pop("INVOCATION_ID", None)
    without_password = {k: v for k, v in env.items() if k != "EDGED_MQTT__PASSWORD"}
    sub = collector(broker, "#")
    run = ("run", "--stdout", "--duration", "3", "--stats-interval", "0.5", "--log-level", "debug")
    run += ("--model", str(tmp_path / "no-model.yml"))
    toml, file = ("--config", str(with_password)), ("--config", str(with_file))
    outputs = {
        "config check": _edged("config", "check", *toml, env=env),
        "config check, password_file": _edged("config", "check", *file, env=without_password),
        "config check, bad file": _edged("config", "check", "--config", str(bad), env=env),
        "run, password in TOML and environment": _edged(*run, *toml, env=env),
        "run, password_file": _edged(*run, *file, env=without_password),
        "run --password": _edged("run", *toml, "--password", "Flag-pw-8686", env=env),
        "--mqtt-password=": _edged("--mqtt-password=Flag-pw-9797", *toml, env=env),
    }
    sub.wait_for(f"edged/{device_id}/availability", lambda m: m.text == "offline", timeout=30)
    sub.sync()

    everything = {f"{name} stdout": p.stdout for name, p in outputs.items()}
    everything |= {f"{name} stderr": p.stderr for name, p in outputs.items()}
    everything |= {f"MQTT {m.topic}": m.payload.decode("utf-8", "replace") for m in sub.messages}
    leaks = {}
    for what, secret in SECRETS.items():
        forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}
        found = [where for where, text in everything.items() if any(f in text for f in forms)]
        if found:
            leaks[f"{what} ({secret!r})"] = found
    assert leaks == {}, "secrets leaked (secret: where):\n" + json.dumps(leaks, indent=1)

    # Each output was really produced, and shows what it hides.
    codes = {name: p.returncode for name, p in outputs.items()}
    assert codes == {
        "config check": 0, "config check, password_file": 0, "config check, bad file": 78,
        "run, password in TOML and environment": 0, "run, password_file": 0,
        "run --password": 2, "--mqtt-password=": 2,
    }, {n: p.stderr[-2000:] for n, p in outputs.items()}  # fmt: skip
    shown = "http://***@" + host_port + "/video?user=***&pwd=***&res=640#token=***"
    assert f"source = {json.dumps(shown)}" in outputs["config check"].stdout
    assert 'password = "***"' in outputs["config check"].stdout
    assert "loop.fps" in outputs["config check, bad file"].stderr
    assert "unrecognized arguments: --password ***" in outputs["run --password"].stderr
    for name in ("run, password in TOML and environment", "run, password_file"):
        camera_lines = [
            json.loads(line)
            for line in outputs[name].stdout.splitlines()
            if line.startswith('{"type": "camera"')
        ]
        assert camera_lines and camera_lines[0]["online"] is False
        assert shown in camera_lines[0]["reason"]
        assert "camera offline" in outputs[name].stderr
    stats = [json.loads(m.payload) for m in sub.on(f"edged/{device_id}/stats")]
    assert any(shown in s["camera"]["reason"] for s in stats)
