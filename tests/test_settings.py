"""Settings: sources and their order, strictness, readable errors, the example file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edged import cli
from edged.errors import ConfigError
from edged.settings import Settings, dump_toml, example_toml, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "edged.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edged.toml"
    p.write_text(text)
    return p


def test_defaults_need_no_file_and_match_the_documented_values(clean_env):
    s = load_settings()
    assert s.loop.fps == 5.0
    assert s.model.path == Path("trainer.yml")
    assert s.camera.source == "0"
    assert s.output.stdout is False
    assert s.loop.duration == 0


def test_sources_override_in_order_defaults_file_env_flags(tmp_path, monkeypatch, clean_env):
    cfg = write(tmp_path, '[loop]\nfps = 2\nmax_faces = 2\n[camera]\nsource = "a.mp4"\n')
    s = load_settings(cfg)
    assert (s.loop.fps, s.loop.max_faces, s.camera.source) == (2, 2, "a.mp4")
    monkeypatch.setenv("EDGED_LOOP__FPS", "3")
    monkeypatch.setenv("EDGED_CAMERA__SOURCE", "b.mp4")
    s = load_settings(cfg)
    assert (s.loop.fps, s.loop.max_faces, s.camera.source) == (3, 2, "b.mp4")
    s = load_settings(cfg, {"loop": {"fps": 7}})
    assert (s.loop.fps, s.loop.max_faces, s.camera.source) == (7, 2, "b.mp4")
    assert s.loop.stats_interval == 30.0  # untouched by any source: the default


def test_an_unknown_key_in_the_file_is_an_error_naming_it(tmp_path, clean_env):
    cfg = write(tmp_path, "[camera]\nsoruce = 1\n[lop]\nfps = 2\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert f"camera.soruce ({cfg}): unknown setting" in str(e.value)
    assert f"lop ({cfg}): unknown setting" in str(e.value)


def test_an_unknown_key_in_the_environment_is_an_error(monkeypatch, clean_env):
    monkeypatch.setenv("EDGED_LOOP__FSP", "3")
    with pytest.raises(ConfigError, match=r"loop\.fsp \(environment EDGED_LOOP__FSP\): unknown"):
        load_settings()


def test_a_bad_value_names_the_field_the_value_and_the_reason(tmp_path, clean_env):
    cfg = write(tmp_path, '[loop]\nfps = -1\n[log]\nlevel = "loud"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    text = str(e.value)
    assert f"loop.fps = -1 ({cfg}): Input should be greater than or equal to 0.01" in text
    assert re.search(r"log\.level = 'loud' \(.*\): Input should be 'debug', 'info'", text)


def test_a_file_that_is_missing_or_not_toml_is_named(tmp_path, clean_env):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = write(tmp_path, "[loop\nfps = 1\n")
    with pytest.raises(ConfigError, match=f"{re.escape(str(bad))} is not valid TOML"):
        load_settings(bad)


def test_secrets_never_appear_in_errors_or_in_the_dump(tmp_path, clean_env):
    cfg = write(tmp_path, '[mqtt]\npassword = "hunter2"\nkeyfile = "k.pem"\n')
    with pytest.raises(ConfigError) as e:  # a cross-field error about the mqtt section
        load_settings(cfg)
    assert "hunter2" not in str(e.value)
    assert "keyfile needs certfile" in str(e.value)
    s = load_settings(write(tmp_path, '[mqtt]\npassword = "hunter2"\n'))
    dumped = dump_toml(s)
    assert "hunter2" not in dumped
    assert 'password = "***"' in dumped


def test_the_dump_is_valid_toml_that_loads_back_to_the_same_settings(tmp_path, clean_env):
    s = load_settings(None, {"loop": {"fps": 9.5}, "model": {"labels": ["a", "b"]}})
    again = load_settings(write(tmp_path, dump_toml(s)))
    assert again == s


def _uncommented(text: str) -> str:
    """The example with every ``# key = value`` line switched on (unset ones left out)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^# (\w+ = .*)$", line)
        if m and "(not set)" not in line and "(computed" not in line:
            out.append(m.group(1))
        elif line.startswith("["):
            out.append(line)
    return "\n".join(out) + "\n"


def test_the_example_file_documents_every_option(clean_env):
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^# (\w+) = ", text, re.M))
    sections = set(re.findall(r"^\[(\w+)\]$", text, re.M))
    for name, info in Settings.model_fields.items():
        assert name in sections, f"[{name}] missing from config/edged.toml"
        for key in info.annotation.model_fields:
            assert key in documented, (
                f"{name}.{key} missing from config/edged.toml: "
                "run `edged config example > config/edged.toml`"
            )


def test_the_example_file_switched_on_gives_exactly_the_defaults(tmp_path, clean_env):
    on = _uncommented(EXAMPLE.read_text())
    tomllib.loads(on)  # valid TOML once uncommented
    assert load_settings(write(tmp_path, on)) == load_settings()


def test_config_check_prints_the_effective_settings_masked(tmp_path, capsys, clean_env):
    cfg = write(tmp_path, '[loop]\nfps = 4\n[mqtt]\npassword = "hunter2"\n')
    assert cli.main(["config", "check", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert "fps = 4" in out
    assert "hunter2" not in out + err
    assert tomllib.loads(out)["loop"]["fps"] == 4
    assert "configuration OK" in err


def test_config_check_exits_78_naming_the_bad_field(tmp_path, capsys, clean_env):
    cfg = write(tmp_path, "[camera]\nwidth = -5\n")
    assert cli.main(["config", "check", "--config", str(cfg)]) == 78
    err = capsys.readouterr().err
    assert f"camera.width = -5 ({cfg})" in err
    assert "greater than or equal to 0" in err


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        ('[camera]\nsource = "caf\xe9.avi"\n'.encode("latin-1"), "byte 0xe9 on line 2, column 14"),
        ("[loop]\nfps = 4\n".encode("utf-16"), "byte 0xff on line 1, column 1"),
        ("[loop]\nfps = 4\n".encode("utf-16-le"), "NUL bytes"),
    ],
    ids=["latin-1", "utf-16", "utf-16-without-bom"],
)
def test_a_config_file_that_is_not_utf8_exits_78_naming_the_file(
    tmp_path, capsys, clean_env, encoded, why
):
    """Used to end in a UnicodeDecodeError traceback (exit 70)."""
    cfg = tmp_path / "edged.toml"
    cfg.write_bytes(encoded)
    assert cli.main(["config", "check", "--config", str(cfg)]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"edged: error: config file {cfg} is not UTF-8 text")
    assert why in err[0]


def test_a_utf8_config_file_with_a_bom_is_read(tmp_path, clean_env):
    cfg = tmp_path / "edged.toml"
    cfg.write_bytes("\ufeff[loop]\nfps = 4\n".encode())
    assert load_settings(cfg).loop.fps == 4


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan"])
def test_model_max_size_mb_must_be_a_positive_finite_number(tmp_path, clean_env, value):
    cfg = write(tmp_path, f"[model]\nmax_size_mb = {value}\n")
    with pytest.raises(ConfigError, match=r"model\.max_size_mb"):
        load_settings(cfg)


def test_config_example_prints_the_documented_file(capsys):
    assert cli.main(["config", "example"]) == 0
    assert capsys.readouterr().out == example_toml()


def test_an_error_says_which_source_gave_the_bad_value(tmp_path, monkeypatch, clean_env):
    cfg = write(tmp_path, "[loop]\nfps = -1\nmax_faces = 0\n")
    monkeypatch.setenv("EDGED_LOOP__MAX_FACES", "-2")  # the environment wins over the file
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, {"loop": {"stats_interval": -1}})
    text = str(e.value)
    assert f"loop.fps = -1 ({cfg})" in text
    assert "loop.max_faces = '-2' (environment EDGED_LOOP__MAX_FACES)" in text
    assert "loop.stats_interval = -1 (command line)" in text


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"EDGED_MQTT": "{not json"}, "mqtt"),
        ({"EDGED_MQTT__HOST": ""}, "mqtt.host"),
        ({"EDGED_MQTT__PREFIX": "home/#"}, "mqtt.prefix"),
        ({"EDGED_HOMEASSISTANT__STATUS_TOPIC": "ha/+"}, "homeassistant.status_topic"),
    ],
    ids=["env-json-not-json", "empty-broker-host", "wildcard-prefix", "wildcard-status-topic"],
)
def test_values_that_would_only_fail_later_are_config_errors_exit_78(clean_env, env, field):
    proc = subprocess.run(
        [sys.executable, "-m", "edged", "config", "check"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.returncode == 78, proc.stderr
    assert field in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "source",
    [
        "rtsp://admin:s3cret@cam/stream",
        "rtsp://admin:p@s3cret@cam/stream",  # a password holding '@'
        "rtspsrc location=rtsp://admin:s3cret@cam:554/x ! decodebin ! appsink",
    ],
)
def test_camera_passwords_never_reach_logs_or_config_check(clean_env, source):
    from edged.daemon.capture import display_name

    assert "s3cret" not in display_name(source)
    proc = subprocess.run(
        [sys.executable, "-m", "edged", "config", "check"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "EDGED_CAMERA__SOURCE": source},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "***@cam" in proc.stdout and "s3cret" not in proc.stdout + proc.stderr


def test_settings_reject_a_client_key_without_its_certificate(clean_env, tmp_path):
    with pytest.raises(ConfigError, match="keyfile needs certfile"):
        load_settings(None, {"mqtt": {"keyfile": str(tmp_path / "k.pem")}})


def test_settings_reject_a_device_id_that_would_break_topics(clean_env):
    with pytest.raises(ConfigError, match=r"mqtt\.device_id"):
        load_settings(None, {"mqtt": {"device_id": "kitchen/+"}})


def test_a_settings_error_never_quotes_a_secret_it_was_given(tmp_path, clean_env):
    """pydantic quotes bad inputs; a secret among them (a camera URL in a list, a password
    of the wrong type) is hidden, and every bad field is still named."""
    url = "rtsp://cam-user:Pa ss/w0rd@cam/live?token=T0k-9876"
    cfg = write(
        tmp_path,
        f'[camera]\nsource = ["{url}"]\n[mqtt]\npassword = ["Toml-pw-1357"]\n[loop]\nfps = 0\n',
    )
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    text = str(e.value)
    assert "camera.source = ['rtsp://***@cam/live?token=***']" in text
    assert "mqtt.password = ***" in text and "loop.fps = 0" in text
    for secret in ("Pa ss/w0rd", "T0k-9876", "cam-user", "Toml-pw-1357"):
        assert secret not in text


def test_loaded_settings_register_their_secrets_for_every_later_output(clean_env):
    from edged.redact import redact

    s = load_settings(
        None,
        {
            "camera": {"source": "http://cam/v?pwd=Qry-pw-8642&res=640"},
            "mqtt": {"password": "Mqtt-pw-9753"},
        },
    )
    assert 'source = "http://cam/v?pwd=***&res=640"' in dump_toml(s)
    said = redact("a library quoted Mqtt-pw-9753 and Qry-pw-8642 in some other form")
    assert said == "a library quoted *** and *** in some other form"


@pytest.mark.parametrize("host", ["mqtt://u:Pw-Zz-9182@broker", "u:Pw-Zz-9182@broker", "a b"])
def test_a_broker_host_that_is_a_url_is_a_config_error_that_hides_its_password(host, clean_env):
    with pytest.raises(ConfigError, match=r"mqtt\.host .*not a URL") as e:
        load_settings(None, {"mqtt": {"host": host}})
    assert "Pw-Zz-9182" not in str(e.value)
