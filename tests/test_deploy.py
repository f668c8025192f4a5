"""Deployment: the systemd unit's promises, and `make install` / `make uninstall`.

The install tests stage everything under a scratch DESTDIR and record systemctl calls
instead of making them, so the real system is never touched.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from edged.settings import HttpSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "edged.service"
INSTALL = ROOT / "deploy" / "install.sh"
ANALYZE = shutil.which("systemd-analyze")


def _render_module():
    spec = importlib.util.spec_from_file_location("render_config", ROOT / "deploy/render_config.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


render_config = _render_module()


def unit_settings(text: str | None = None) -> dict[str, dict[str, list[str]]]:
    """The unit file as section -> key -> values (keys may repeat, as systemd allows)."""
    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in (UNIT.read_text() if text is None else text).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out[section][key.strip()].append(value.strip())
    return out


# -- the unit -----------------------------------------------------------------------------


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_exposure_is_at_most_1_5():
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, f"no exposure level in systemd-analyze output:\n{proc.stdout}{proc.stderr}"
    assert float(m[1]) <= 1.5, proc.stdout


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify_without_warnings(tmp_path):
    # /opt/edged is not installed here: point ExecStart at a binary that exists so
    # verify checks everything else (unknown keys, bad values) instead of stopping there.
    unit = tmp_path / "edged.service"
    unit.write_text(UNIT.read_text().replace("/opt/edged/bin/edged", "/bin/true"))
    proc = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def web_page_drop_in() -> list[str]:
    """The drop-in lines the unit's comments give for opening the web page to the LAN."""
    text = UNIT.read_text()
    block = text[text.index("# --- the web page") :].split("\n\n", 1)[0]
    return [m[1] for m in re.finditer(r"(?m)^#  (\w+=\S.*)$", block)]


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_units_web_page_drop_in_is_valid_and_keeps_exposure_at_most_1_5(tmp_path):
    """The listener needs nothing the unit does not grant (AF_INET is there for the
    broker); the documented LAN drop-in (its password and TLS key as credentials) is
    accepted by systemd and loosens nothing."""
    lines = web_page_drop_in()
    assert "LoadCredential=http_password:/etc/edged/http_password" in lines
    text = UNIT.read_text().replace("/opt/edged/bin/edged", "/bin/true")
    unit = tmp_path / "edged.service"
    unit.write_text(text.replace("[Install]", "\n".join(lines) + "\n\n[Install]"))
    verify = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert m and float(m[1]) <= 1.5, security.stdout


def test_unit_lets_the_daemon_listen_on_ip_without_a_capability():
    svc = unit_settings()["Service"]
    families = svc["RestrictAddressFamilies"][0].split()
    assert {"AF_INET", "AF_INET6"} <= set(families)  # the page's socket, as the broker's
    assert "PrivateNetwork" not in svc  # 127.0.0.1 would be the sandbox's own
    # No IP filter by default: it would also have to name the broker (README, The sandbox).
    assert "IPAddressDeny" not in svc and "SocketBindDeny" not in svc
    # The page's default port needs no CAP_NET_BIND_SERVICE, which the unit withholds.
    assert HttpSettings().port >= 1024
    assert svc["CapabilityBoundingSet"] == [""]


def test_unit_is_notify_with_watchdog_reload_and_bounded_restarts():
    u = unit_settings()
    svc = u["Service"]
    assert svc["Type"] == ["notify"]
    assert int(svc["WatchdogSec"][0]) > 0
    assert svc["Restart"] == ["on-failure"]
    assert int(u["Unit"]["StartLimitBurst"][0]) > 0
    assert int(u["Unit"]["StartLimitIntervalSec"][0]) > 0
    assert "-HUP" in svc["ExecReload"][0] and "MAINPID" in svc["ExecReload"][0]
    assert u["Install"]["WantedBy"] == ["multi-user.target"]


def systemd_argv(command: str, mainpid: int) -> list[str]:
    """An Exec*= value as systemd runs it (systemd.service(5), Command lines): words
    unquoted, the prefix characters dropped, ``$MAINPID`` as a word of its own and
    ``${MAINPID}`` anywhere replaced by the PID."""
    words = shlex.split(command)
    words[0] = words[0].lstrip("-@:+!")
    return [
        str(mainpid) if w == "$MAINPID" else w.replace("${MAINPID}", str(mainpid)) for w in words
    ]


WAITS_FOR_HUP = """
import signal, sys, time
signal.signal(signal.SIGHUP, lambda *_: (print("HUP", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(30)
sys.exit(1)
"""
# /bin/kill (procps) hidden behind an empty file that cannot be run, as on an image
# without procps; then the reload command, with only the environment systemd gives it.
NO_PROCPS = """
for k in /bin/kill /usr/bin/kill /usr/local/bin/kill; do
    if [ -e "$k" ]; then mount --bind "$EMPTY" "$k"; fi
done
exec env -i MAINPID="$MAINPID" "$@"
"""
UNSHARE = shutil.which("unshare")


@pytest.mark.parametrize("image", ["as systemd runs it", "without procps"])
def test_reload_sends_sighup_to_the_main_process_with_nothing_but_sh(tmp_path, image):
    if image == "without procps" and (os.geteuid() != 0 or UNSHARE is None):
        pytest.skip("hiding /bin/kill needs root and unshare")
    main = subprocess.Popen(
        [sys.executable, "-c", WAITS_FOR_HUP], stdout=subprocess.PIPE, text=True
    )
    try:
        assert main.stdout is not None
        assert main.stdout.readline() == "ready\n"
        argv = systemd_argv(unit_settings()["Service"]["ExecReload"][0], main.pid)
        env = {"MAINPID": str(main.pid)}  # systemd sets it for ExecReload=; no PATH
        if image == "without procps":
            empty = tmp_path / "no-kill"
            empty.write_text("")
            private = [UNSHARE, "--mount", "--propagation", "private"]
            argv = [*private, "sh", "-c", NO_PROCPS, "sh", *argv]
            env.update(EMPTY=str(empty), PATH=os.environ["PATH"])
        reload = subprocess.run(
            argv, env=env, capture_output=True, text=True, check=False, timeout=30
        )
        if "unshare" in reload.stderr and "Operation not permitted" in reload.stderr:
            pytest.skip(f"no private mount namespace here: {reload.stderr.strip()}")
        assert reload.returncode == 0, reload.stderr
        assert main.stdout.readline() == "HUP\n"
        assert main.wait(timeout=30) == 0
    finally:
        if main.poll() is None:
            main.kill()
        main.wait()
        if main.stdout:
            main.stdout.close()


def test_unit_does_not_restart_loop_on_bad_config_exit_78():
    from edged.errors import ExitStatus

    statuses = unit_settings()["Service"]["RestartPreventExitStatus"][0].split()
    assert str(int(ExitStatus.CONFIG)) in statuses


def test_unit_runs_the_installed_daemon_with_the_etc_config_and_no_secret_on_the_command_line():
    svc = unit_settings()["Service"]
    assert svc["ExecStart"] == ["/opt/edged/bin/edged run --config /etc/edged/edged.toml"]
    assert "password" not in svc["ExecStart"][0].lower()
    assert "password" not in " ".join(svc.get("Environment", [])).lower()


def test_unit_runs_unprivileged_in_group_video_with_camera_devices_only():
    svc = unit_settings()["Service"]
    assert svc["DynamicUser"] == ["yes"] or svc.get("User", ["root"])[0] != "root"
    assert "video" in svc["SupplementaryGroups"][0].split()
    assert svc["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in svc["DeviceAllow"]}
    assert allowed <= {"char-video4linux", "char-media", "char-dma_heap"}
    assert "char-video4linux" in allowed
    assert svc["CapabilityBoundingSet"] == [""]
    assert svc["NoNewPrivileges"] == ["yes"]


def test_unit_writes_only_its_state_directory_and_reads_its_config_directory():
    svc = unit_settings()["Service"]
    assert svc["ProtectSystem"] == ["strict"]  # everything else read-only
    assert svc["StateDirectory"] == ["edged"]  # /var/lib/edged: the model
    assert svc["ConfigurationDirectory"] == ["edged"]  # /etc/edged
    assert svc["WorkingDirectory"] == ["/var/lib/edged"]  # a relative model.path lands here
    assert "ReadWritePaths" not in svc
    assert svc["PrivateTmp"] == ["yes"]
    # The trainer (root) writes trainer.yml 0644 into the state directory: the directory
    # itself must let the service user in.
    assert svc["StateDirectoryMode"] == ["0755"]


# -- the configuration the installer writes -----------------------------------------------


def test_installed_config_points_the_daemon_at_var_lib_edged(tmp_path):
    text = render_config.render((ROOT / "config" / "edged.toml").read_text())
    path = tmp_path / "edged.toml"
    path.write_text(text)
    assert load_settings(path).model.path == Path("/var/lib/edged/trainer.yml")
    # Everything else stays documented (commented) at its default.
    assert load_settings(path).mqtt.host == load_settings(None).mqtt.host
    assert "# source = " in text


def test_installed_config_without_an_example_is_still_valid(tmp_path):
    path = tmp_path / "edged.toml"
    path.write_text(render_config.render(render_config.FALLBACK))
    assert load_settings(path).model.path == Path("/var/lib/edged/trainer.yml")


@pytest.mark.parametrize(
    "example",
    [
        '[model]\npath = "old.yml"\npoll_interval = 2.0\n',  # already set: replaced
        "[camera]\nsource = '0'\n",  # no [model] section: added
        "[model]\n# nothing here\n[mqtt]\nhost = 'b'\n",  # section without the key
    ],
)
def test_installed_config_sets_model_path_whatever_the_example_holds(example):
    parsed = tomllib.loads(render_config.render(example, "/var/lib/edged/trainer.yml"))
    assert parsed["model"]["path"] == "/var/lib/edged/trainer.yml"


def test_installed_config_refuses_an_example_that_is_not_toml():
    with pytest.raises(ValueError, match="not valid TOML"):
        render_config.render("[camera\nsource = ")


# -- make install / make uninstall --------------------------------------------------------


def _env(destdir: Path, log: Path, **extra: str) -> dict[str, str]:
    recorder = destdir.parent / "systemctl"
    recorder.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    recorder.chmod(0o755)
    env = dict(os.environ)
    env.update(
        DESTDIR=str(destdir),
        PYTHON=sys.executable,  # its base interpreter makes the venv
        # The test environment's pip can build the package but need not fetch the world.
        PIP_INSTALL_ARGS="--no-deps --quiet",
        SYSTEMCTL=str(recorder),
        SYSTEM_DEPS="true",
    )
    env.update(extra)
    return env


def _make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), target],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _files(root: Path) -> set[str]:
    """Everything under root except the virtualenv's insides, as /paths."""
    out = set()
    for p in root.rglob("*"):
        rel = "/" + str(p.relative_to(root))
        if rel.startswith("/opt/edged/") and rel.count("/") > 3:
            continue
        if p.is_file() or p.is_symlink():
            out.add(rel)
    return out


INSTALLED = {
    "/opt/edged/.installed-by-edged",
    "/opt/edged/pyvenv.cfg",
    "/usr/local/bin/edged",
    "/usr/local/bin/edged-train",
    "/usr/local/lib/systemd/system/edged.service",
    "/etc/edged/edged.toml",
    "/etc/edged/edged.toml.example",
    "/var/lib/edged/trainer.yml",
}


def assert_everything_the_unit_names_exists(root: Path, unit: str) -> list[Path]:
    """Documentation= files are installed under root; every program an Exec*= line runs
    exists: ours (/opt/edged) under root, the system's (/bin/sh) on this machine.
    Returns the documentation files."""
    settings = unit_settings(unit)
    docs = [d for value in settings["Unit"]["Documentation"] for d in value.split()]
    assert docs
    files = []
    for doc in docs:
        assert doc.startswith("file:///"), f"not something installed: {doc}"
        files.append(root / doc.removeprefix("file:///"))
        assert files[-1].is_file(), doc
    commands = [v for k, vs in settings["Service"].items() if k.startswith("Exec") for v in vs]
    assert len(commands) >= 2  # ExecStart=, ExecReload=
    for command in commands:
        program = Path(systemd_argv(command, 1)[0])
        assert program.is_absolute(), command
        where = root / program.relative_to("/") if program.is_relative_to("/opt/edged") else program
        assert where.is_file() and os.access(where, os.X_OK), command
    return files


@pytest.mark.slow
def test_make_install_twice_then_uninstall_twice_keeps_config_and_model(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    log = tmp_path / "systemctl.log"
    env = _env(root, log)
    model = root / "var/lib/edged/trainer.yml"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"%YAML:1.0\n# the admin's model\n")
    config = root / "etc/edged/edged.toml"

    first = _make("install", env)
    assert first.returncode == 0, first.stderr
    assert _files(root) >= INSTALLED
    assert load_settings(config).model.path == Path("/var/lib/edged/trainer.yml")
    assert log.read_text().splitlines() == ["daemon-reload", "try-restart edged.service"]

    # What was baked in names the final paths, never the staging root.
    venv = root / "opt/edged"
    for name in ("edged", "edged-train"):
        assert (venv / "bin" / name).read_text().startswith("#!/opt/edged/bin/python\n")
        assert os.readlink(root / "usr/local/bin" / name) == f"/opt/edged/bin/{name}"
    for f in [*sorted((venv / "bin").iterdir()), venv / "pyvenv.cfg", *root.rglob("*.service")]:
        if f.is_file() and not f.is_symlink():
            assert str(root).encode() not in f.read_bytes(), f
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    unit = (root / "usr/local/lib/systemd/system/edged.service").read_text()
    assert unit == UNIT.read_text()
    docs = assert_everything_the_unit_names_exists(root, unit)
    if ANALYZE:  # systemd finds the unit by name where it was installed
        found = subprocess.run(
            [ANALYZE, "security", "--offline=true", f"--root={root}", "edged.service"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert "Overall exposure level for edged.service" in found.stdout, found.stderr
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import edged; print(edged.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the source tree, which python -c would import from
    ).stdout
    assert where.startswith(str(venv / "lib"))

    # The admin edits the configuration; an update must not undo it. Meanwhile the
    # system's Python became another version (a distribution upgrade).
    config.write_text(config.read_text().replace("[mqtt]", '[mqtt]\nhost = "broker.lan"', 1))
    edited = config.read_bytes()
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(re.sub(r"(?m)^version = .*$", "version = 3.9.2", cfg.read_text()))
    second = _make("install", env)
    assert second.returncode == 0, second.stderr
    assert "keeping your /etc/edged/edged.toml" in second.stderr
    assert "creating the virtualenv" in second.stderr  # rebuilt for the new Python
    assert "version = 3.9.2" not in cfg.read_text()
    assert config.read_bytes() == edited
    assert _files(root) >= INSTALLED

    for _ in range(2):
        log.write_text("")
        gone = _make("uninstall", env)
        assert gone.returncode == 0, gone.stderr
        assert _files(root) == {"/etc/edged/edged.toml", "/var/lib/edged/trainer.yml"}
        assert config.read_bytes() == edited
        assert model.read_bytes() == b"%YAML:1.0\n# the admin's model\n"
        assert "daemon-reload" in log.read_text().splitlines()
    assert not venv.exists()
    assert docs and not any(d.exists() for d in docs)  # the documentation went with it


def _script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), action],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_install_refuses_a_unit_that_runs_a_program_this_machine_lacks(tmp_path):
    """ExecReload=/bin/kill on an image without procps: found by make install, not by the
    first `systemctl reload` that silently does nothing."""
    src = tmp_path / "src"
    (src / "deploy").mkdir(parents=True)
    shutil.copy(INSTALL, src / "deploy/install.sh")
    text = UNIT.read_text()
    reload = unit_settings()["Service"]["ExecReload"][0]
    (src / "deploy/edged.service").write_text(
        text.replace(f"ExecReload={reload}", "ExecReload=-/nowhere/kill -HUP $MAINPID")
    )
    root = tmp_path / "root"
    proc = subprocess.run(
        ["bash", str(src / "deploy/install.sh"), "install"],
        env=_env(root, tmp_path / "log"),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "edged.service runs /nowhere/kill (ExecReload), which is not installed here" in (
        proc.stderr
    )
    assert not root.exists() or not any(root.iterdir())  # nothing installed


def test_install_refuses_to_replace_a_directory_it_did_not_create(tmp_path):
    root = tmp_path / "root"
    foreign = root / "opt/edged/something.txt"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("not ours")
    proc = _script("install", _env(root, tmp_path / "log"))
    assert proc.returncode != 0
    assert "was not made by edged's installer" in proc.stderr
    assert foreign.read_text() == "not ours"


def test_uninstall_leaves_files_it_did_not_install(tmp_path):
    root = tmp_path / "root"
    foreign = root / "opt/edged/something.txt"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("not ours")
    other_tool = root / "usr/local/bin/edged"
    other_tool.parent.mkdir(parents=True)
    other_tool.write_text("#!/bin/sh\n")
    proc = _script("uninstall", _env(root, tmp_path / "log"))
    assert proc.returncode == 0, proc.stderr
    assert foreign.read_text() == "not ours"
    assert other_tool.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_install_without_root_or_destdir_says_to_use_sudo_and_changes_nothing(tmp_path):
    env = _env(tmp_path / "root", tmp_path / "log")
    del env["DESTDIR"]
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    existed = Path("/opt/edged").exists()
    # The script comes on stdin: user nobody may not be allowed to read the checkout.
    with INSTALL.open() as script:
        proc = subprocess.run(
            [*nobody, "bash", "-s", "install"],
            stdin=script,
            cwd="/",
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    assert proc.returncode != 0
    assert "run as root: sudo make install" in proc.stderr
    assert Path("/opt/edged").exists() == existed


def test_install_script_without_an_action_prints_usage():
    proc = _script("", dict(os.environ))
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


# -- nothing written outside the state directory ------------------------------------------

STRACE = shutil.which("strace")
WRITE_CALLS = (
    "open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,"
    "rmdir,link,linkat,symlink,symlinkat,truncate,chmod,fchmodat"
)
_PATHS = re.compile(r'"([^"]*)"')


def _writes(cmd: list[str], cwd: Path, trace: Path) -> tuple[subprocess.CompletedProcess, set]:
    """Run cmd under strace; the paths it created, changed or opened for writing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # as the unit sets it: /opt is read-only there
    proc = subprocess.run(
        [STRACE, "-f", "-qq", "-o", str(trace), "-e", f"trace={WRITE_CALLS}", *cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if "PTRACE" in proc.stderr or "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    written = set()
    for line in trace.read_text().splitlines():
        call = line.split(None, 1)[-1]
        if call.startswith(("open", "creat")) and not re.search(r"O_WRONLY|O_RDWR|O_CREAT", call):
            continue  # opened for reading
        if call.startswith(
            (
                "open",
                "creat",
                "mkdir",
                "rename",
                "unlink",
                "rmdir",
                "link",
                "symlink",
                "truncate",
                "chmod",
                "fchmodat",
            )
        ):
            written.update(p for p in _PATHS.findall(call) if p != "/dev/null")
    return proc, written


def _inside(path: str, cwd: Path, state: Path) -> bool:
    full = Path(path) if path.startswith("/") else cwd / path
    return full.resolve().is_relative_to(state.resolve())


@pytest.mark.slow
@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_daemon_writes_nothing_at_all(tmp_path, sample_model, face_video, clean_env):
    from tests.conftest import SAMPLE, Segment

    state = tmp_path / "state"  # the service's working directory, as in the unit
    state.mkdir()
    shutil.copy(sample_model, state / "trainer.yml")
    clip, _ = face_video([Segment(next((SAMPLE / "images").iterdir()), 1.0)])
    config = tmp_path / "edged.toml"
    # As installed, but with a relative model path: it must resolve in the working directory.
    config.write_text(render_config.render((ROOT / "config/edged.toml").read_text(), "trainer.yml"))
    cmd = [sys.executable, "-m", "edged", "run", "--config", str(config)]
    cmd += ["--source", str(clip), "--loop", "--duration", "2", "--no-mqtt"]
    proc, written = _writes(cmd, state, tmp_path / "trace")
    assert proc.returncode == 0, proc.stderr
    assert "loaded model" in proc.stderr  # it did run and read its model
    assert written == set()


@pytest.mark.slow
@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_trainer_writes_only_the_model_file_and_its_temporary(tmp_path, clean_env):
    from tests.conftest import SAMPLE

    state = tmp_path / "state"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from edged.cli import train_main; sys.exit(train_main())",
    ]
    cmd += [str(SAMPLE), "-o", str(state / "trainer.yml"), "-q", "--classes", "happy,sad"]
    proc, written = _writes(cmd, tmp_path, tmp_path / "trace")
    assert proc.returncode == 0, proc.stderr
    assert (state / "trainer.yml").is_file()
    assert written, "the trace saw no writes at all: it is not tracing what it should"
    assert {p for p in written if not _inside(p, tmp_path, state)} == set()
