"""Logging: one journal entry per record with its priority under journald, readable elsewhere.

journald is not running here (PID 1 is not systemd), so most tests stand in for it: stderr
is a file whose device and inode go into ``JOURNAL_STREAM``, exactly what systemd sets for
the stream it connects, and journald's native socket is replaced by a function that
records what `systemd.journal.send` would send. The last test starts a real
systemd-journald in private mount and PID namespaces, where it can (root, unshare).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged import logs
from edged.logs import FOLD, priority, setup_logging, stderr_is_journal

ROOT = Path(__file__).resolve().parent.parent

# What every subprocess logs: a warning, an error with a traceback, info, debug, and a
# message that itself spans two lines.
SCRIPT = """
import logging, sys
if sys.argv[1] == "no-systemd-python":
    sys.modules["systemd"] = None  # import systemd... raises ImportError
from edged.logs import setup_logging
handler = setup_logging("debug")
log = logging.getLogger("edged.test")
log.warning("careful: %s", "hot")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("boom")
log.info("info")
log.debug("debug")
log.info("two\\nlines")
print(type(handler).__name__)
"""


def run_logging(
    tmp_path: Path, mode: str, journal_stream: str | None = "match"
) -> tuple[str, list[str]]:
    """Run SCRIPT with stderr in a file; JOURNAL_STREAM naming that file, another, or unset."""
    err_path = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    with err_path.open("w") as err:
        st = os.fstat(err.fileno())
        if journal_stream == "match":
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, mode],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
            timeout=60,
        )
    return proc.stdout.strip(), err_path.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger's handlers and level put back after a test that calls setup_logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for h in root.handlers[:]:
        root.removeHandler(h)
        if h not in handlers:
            h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_levels_map_to_the_sd_daemon_priorities():
    assert [priority(lv) for lv in (5, 10, 15, 20, 25, 30, 40, 50, 60)] == [
        7, 7, 6, 6, 4, 4, 3, 2, 1,
    ]  # fmt: skip


def test_stderr_is_the_journal_only_when_journal_stream_names_its_device_and_inode(tmp_path):
    with (tmp_path / "f").open("w") as f, (tmp_path / "g").open("w") as g:
        st = os.fstat(f.fileno())
        mine = f"{st.st_dev}:{st.st_ino}"
        assert stderr_is_journal({"JOURNAL_STREAM": mine}, fd=f.fileno())
        # Inherited, but the stream was redirected (2>file): not the journal.
        assert not stderr_is_journal({"JOURNAL_STREAM": mine}, fd=g.fileno())
    for value in ("", "12", "a:b", f"{st.st_dev}:{st.st_ino + 1}"):
        assert not stderr_is_journal({"JOURNAL_STREAM": value}, fd=2)
    assert not stderr_is_journal({}, fd=2)


def test_under_journald_without_systemd_python_each_record_is_one_line_with_its_priority(
    tmp_path,
):
    handler, lines = run_logging(tmp_path, "no-systemd-python")
    assert handler == "StreamHandler"
    assert len(lines) == 5, lines  # journald makes an entry of every line
    assert lines[0] == "<4>WARNING edged.test: careful: hot"
    assert lines[1].startswith(f"<3>ERROR edged.test: boom{FOLD}Traceback (most recent call last):")
    assert lines[1].endswith(f"{FOLD}ZeroDivisionError: division by zero")
    assert lines[2:] == [
        "<6>INFO edged.test: info",
        "<7>DEBUG edged.test: debug",
        f"<6>INFO edged.test: two{FOLD}lines",
    ]


def test_off_the_journal_lines_are_readable_with_the_time_and_tracebacks_as_python_prints(
    tmp_path,
):
    for journal_stream in (None, "1:1"):  # unset, or inherited by a redirected stderr
        handler, lines = run_logging(tmp_path, "any", journal_stream)
        assert handler == "StreamHandler"
        assert lines[0].endswith(" WARNING edged.test: careful: hot")
        assert lines[0][:4].isdigit()  # 2025-01-31 12:00:00,123 WARNING ...
        assert not any(line.startswith("<") for line in lines)
        assert "Traceback (most recent call last):" in lines
        assert "ZeroDivisionError: division by zero" in lines
        assert FOLD not in "".join(lines)


def test_under_journald_with_systemd_python_it_is_one_native_entry_per_record(
    monkeypatch, root_logger
):
    journal = pytest.importorskip("systemd.journal")
    sent: list[dict[str, Any]] = []

    def send(message: str, **fields: Any) -> None:  # journald's socket, as a test double
        sent.append({"MESSAGE": message, **fields})

    monkeypatch.setattr(journal, "send", send)
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    handler = setup_logging("info")
    assert isinstance(handler, journal.JournalHandler)
    assert root_logger.handlers == [handler]
    log = logging.getLogger("edged.daemon.capture")
    log.warning("camera %s is gone", "/dev/video0")
    try:
        raise ValueError("bad frame")
    except ValueError:
        log.exception("frame processing failed")
    log.debug("not at level info: not sent")

    assert len(sent) == 2
    warning, error = sent
    assert warning["MESSAGE"] == "WARNING edged.daemon.capture: camera /dev/video0 is gone"
    assert warning["PRIORITY"] == "4"
    assert warning["LOGGER"] == "edged.daemon.capture"
    assert warning["SYSLOG_IDENTIFIER"] == "edged"
    assert warning["CODE_FILE"] == __file__
    assert warning["CODE_FUNC"] == sys._getframe().f_code.co_name
    assert error["PRIORITY"] == "3"
    assert error["MESSAGE"].startswith("ERROR edged.daemon.capture: frame processing failed\n")
    assert error["MESSAGE"].endswith("ValueError: bad frame")  # one entry, traceback inside
    # Only named journal fields: not the record's arguments or the exception's repr.
    for entry in sent:
        assert set(entry) <= {"MESSAGE", *logs.JOURNAL_FIELDS}, set(entry)


def test_a_journal_socket_that_refuses_a_record_gets_it_on_stderr_as_a_prefixed_line(
    monkeypatch, root_logger, capfd
):
    journal = pytest.importorskip("systemd.journal")

    def send(message: str, **fields: Any) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(journal, "send", send)
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    setup_logging("info")
    logging.getLogger("edged.x").error("one\ntwo")
    assert capfd.readouterr().err == f"<3>ERROR edged.x: one{FOLD}two\n"


class Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = record.getMessage().replace("hunter2", "***")
        record.args = ()
        return True


@pytest.mark.parametrize("mode", ["readable", "prefixed", "journal"])
def test_the_filters_given_are_on_every_handler_installed(mode, monkeypatch, root_logger, capfd):
    sent: list[str] = []
    if mode == "journal":
        journal = pytest.importorskip("systemd.journal")
        monkeypatch.setattr(journal, "send", lambda message, **fields: sent.append(message))
    else:
        monkeypatch.setattr(logs, "journal_handler", lambda: None)
    if mode == "readable":
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        st = os.fstat(2)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    handler = setup_logging("info", filters=[Redact()])
    assert root_logger.handlers == [handler]
    logging.getLogger("edged.mqtt").warning("password %s", "hunter2")
    out = "".join(sent) + capfd.readouterr().err
    assert "password ***" in out
    assert "hunter2" not in out


# -- a real journald -----------------------------------------------------------------------

JOURNALD = "/lib/systemd/systemd-journald"
E2E = """
set -eu
mount -t tmpfs tmpfs /run          # private: the host's /run is not touched
mkdir -p /run/systemd/journal /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
{journald} >/dev/null 2>&1 &
trap 'kill $!' EXIT
for i in $(seq 100); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.05; done
for mode in native no-systemd-python; do
    # systemd-cat connects stdout and stderr to journald's stream, as systemd does for a
    # service; it does not set JOURNAL_STREAM, so the shell does, from fd 2.
    systemd-cat -t edged-test sh -c \
        'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$0" -c "$1" "$2"' \
        {python} "$SCRIPT" "$mode"
done
journalctl -D /run/log/journal -o json --no-pager \
    SYSLOG_IDENTIFIER=edged-test + SYSLOG_IDENTIFIER=edged >"$OUT"
"""


@pytest.mark.skipif(
    os.geteuid() != 0
    or not all(map(shutil.which, ("unshare", "systemd-cat", "journalctl")))
    or not os.access(JOURNALD, os.X_OK),
    reason="needs root, unshare, systemd-journald, systemd-cat and journalctl",
)
def test_a_real_journald_gets_one_entry_per_record_with_its_priority(tmp_path):
    out = tmp_path / "journal.json"
    script = E2E.format(journald=JOURNALD, python=sys.executable)
    private = ["--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc"]
    proc = subprocess.run(
        ["unshare", *private, "sh", "-c", script],
        env={**os.environ, "SCRIPT": textwrap.dedent(SCRIPT), "OUT": str(out)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"no private namespaces here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    logged = [(e["PRIORITY"], e["MESSAGE"].split("\n")[0], e.get("LOGGER")) for e in entries]
    native = [e for e in logged if e[2] == "edged.test"]  # through JournalHandler
    assert [p for p, _, _ in native] == ["4", "3", "6", "7", "6"], logged
    assert native[0][1] == "WARNING edged.test: careful: hot"
    assert all(e["SYSLOG_IDENTIFIER"] == "edged" for e in entries if e.get("LOGGER"))
    levels = ("WARNING", "ERROR", "INFO", "DEBUG")
    stream = [e for e in logged if e[2] is None and e[1].startswith(levels)]  # <N> lines
    assert [p for p, _, _ in stream] == ["4", "3", "6", "7", "6"], logged
    assert stream[1][1].startswith(f"ERROR edged.test: boom{FOLD}Traceback")
    assert stream[1][1].endswith("ZeroDivisionError: division by zero")


def test_every_handler_hides_registered_secrets_even_inside_a_traceback(root_logger, capfd):
    """A worker's traceback quoting a password (an exception text we do not control) is
    redacted by the handler itself: setup_logging always installs the redacting filter."""
    from edged.redact import register_secret

    register_secret("Tr4ceback-Secret-77")
    setup_logging("info")
    log = logging.getLogger("edged.test")
    try:
        raise RuntimeError("driver said: login failed for Tr4ceback-Secret-77")
    except RuntimeError:
        log.exception("worker edged-capture failed")
    err = capfd.readouterr().err
    assert "worker edged-capture failed" in err and "RuntimeError" in err
    assert "Tr4ceback-Secret-77" not in err
