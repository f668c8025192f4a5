"""The privacy switch's state survives a restart (issue 12, item 5, the daemon's half).

ON at the very first start; OFF stays OFF across a restart; a state file that cannot be
read or understood starts OFF (privacy first) with one WARNING; written only when the
switch changes; a write that fails (a full disk) is one WARNING and the switch still works.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import Segment, sample_images

from edged.daemon.expression import Expression
from edged.daemon.smoothing import Smoother, SmoothingConfig
from edged.daemon.switch_state import SwitchMemory
from edged.settings import SWITCH_FILE, load_settings


def expression(path: Path | None) -> Expression:
    return Expression(Smoother(SmoothingConfig()), memory=SwitchMemory(path))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- in process: Expression and its memory --------------------------------------------


def test_the_very_first_start_is_on_and_writes_nothing(tmp_path, caplog):
    state = tmp_path / "detect.state"
    e = expression(state)
    assert e.detect is True
    e.update(None, 1.0, 1000.0)
    assert not state.exists() and not warnings(caplog)


def test_off_is_remembered_and_the_next_start_is_off(tmp_path, caplog):
    state = tmp_path / "detect.state"
    first = expression(state)
    first.switch(False, 1.0, 1000.0)
    assert state.read_text() == "OFF\n"
    with caplog.at_level(logging.INFO):
        second = expression(state)
    assert second.detect is False
    assert any("starts OFF, as it was left" in r.getMessage() for r in caplog.records)
    assert second.update(None, 2.0, 1001.0) == (None, None)  # nothing about the room
    second.switch(True, 3.0, 1002.0)
    assert state.read_text() == "ON\n"
    assert expression(state).detect is True


def test_the_state_is_written_only_when_the_switch_changes(tmp_path):
    state = tmp_path / "detect.state"
    e = expression(state)
    e.switch(True, 1.0, 1000.0)  # already on: no change, no write
    assert not state.exists()
    e.switch(False, 2.0, 1001.0)
    inode = state.stat().st_ino  # every write_atomic is a new inode
    for i in range(20):
        e.switch(False, 3.0 + i, 1002.0 + i)
        e.update(None, 3.0 + i, 1002.0 + i)
    assert state.stat().st_ino == inode


@pytest.mark.parametrize(
    "content", [b"", b"garbage\n", b"\xff\xfe", b"ONX\n", b"OFF OFF\n"], ids=repr
)
def test_a_state_file_that_cannot_be_understood_starts_off_with_one_warning(
    tmp_path, caplog, content
):
    state = tmp_path / "detect.state"
    state.write_bytes(content)
    e = expression(state)
    assert e.detect is False
    [warning] = warnings(caplog)
    assert str(state) in warning and "starts OFF (privacy first)" in warning
    e.switch(True, 1.0, 1000.0)  # the person's wish, now known: rewritten
    assert state.read_text() == "ON\n"


def test_a_state_file_that_cannot_be_read_starts_off_with_one_warning(tmp_path, caplog):
    state = tmp_path / "detect.state"
    state.mkdir()  # read_bytes: IsADirectoryError (root reads any mode)
    assert expression(state).detect is False
    [warning] = warnings(caplog)
    assert "cannot read its last state" in warning and "privacy first" in warning


def test_lower_case_and_spaces_are_understood(tmp_path):
    state = tmp_path / "detect.state"
    state.write_text(" off \n")
    assert expression(state).detect is False
    state.write_text("on")
    assert expression(state).detect is True


def test_without_a_state_file_setting_every_start_is_on(tmp_path, caplog):
    e = expression(None)
    e.switch(False, 1.0, 1000.0)
    assert expression(None).detect is True
    assert list(tmp_path.iterdir()) == [] and not warnings(caplog)


def test_a_failed_write_logs_a_warning_and_the_switch_still_works(tmp_path, caplog):
    state = tmp_path / "no-such-folder" / "detect.state"
    e = expression(state)
    report, event = e.switch(False, 1.0, 1000.0)
    assert e.detect is False and report is not None and report.detect is False
    assert event is None or event.to == "none"
    [warning] = warnings(caplog)
    assert "cannot remember OFF" in warning and str(state) in warning
    assert e.update(None, 2.0, 1001.0) == (None, None)
    e.switch(True, 3.0, 1002.0)
    assert e.detect is True


FULL_DISK = """
import logging, sys
from pathlib import Path
from edged.daemon.expression import Expression
from edged.daemon.smoothing import Smoother, SmoothingConfig
from edged.daemon.switch_state import SwitchMemory
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
e = Expression(Smoother(SmoothingConfig()), memory=SwitchMemory(Path(sys.argv[1])))
report, _ = e.switch(False, 1.0, 1000.0)
print(e.detect, report.detect, e.update(None, 2.0, 1001.0))
"""


def test_a_full_disk_when_writing_the_state_logs_a_warning_and_the_switch_works(tmp_path):
    """RLIMIT_FSIZE 0: every write to a file fails with EFBIG, as on a full disk; the old
    state file (ON) is left as it was."""
    state = tmp_path / "detect.state"
    state.write_text("ON\n")

    def full() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    r = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(state)],
        capture_output=True, text=True, timeout=60, preexec_fn=full, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "(None,", "None)"]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("WARNING privacy switch: cannot remember OFF")
    assert "File too large" in lines[0]
    assert state.read_text() == "ON\n"
    assert [p.name for p in tmp_path.iterdir()] == ["detect.state"]  # no temp file left


def test_the_default_state_file_is_in_systemds_state_directory(tmp_path, monkeypatch, clean_env):
    assert load_settings().privacy.state_file is None  # outside systemd: not kept
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert load_settings().privacy.state_file == tmp_path / SWITCH_FILE
    monkeypatch.setenv("EDGED_PRIVACY__STATE_FILE", str(tmp_path / "elsewhere"))
    assert load_settings().privacy.state_file == tmp_path / "elsewhere"


# -- a real daemon, run twice -------------------------------------------------------------


class Daemon:
    """``edged run`` on a looping clip, --no-mqtt --stdout, its page on a free port."""

    def __init__(self, tmp: Path, clip: Path, model: Path, state_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
        env.update(PYTHONUNBUFFERED="1", STATE_DIRECTORY=str(state_dir), EDGED_HTTP__PORT="0")
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CREDENTIALS_DIRECTORY"):
            env.pop(key, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--source", str(clip), "--loop",
             "--model", str(model), "--fps", "10", "--no-mqtt", "--stdout"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp, env=env,
        )  # fmt: skip
        self.records: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream: IO[str], json_lines: bool) -> None:
        for line in stream:
            if json_lines:
                self.records.put(json.loads(line))
            else:
                self.log.append(line)

    def detect_records(self, count: int, timeout: float = 30) -> list[bool]:
        """The first ``count`` ``detect`` records from now on (the switch's values)."""
        seen: list[bool] = []
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            rec = self.records.get(timeout=max(0.01, deadline - time.monotonic()))
            if rec["type"] == "detect":
                seen.append(rec["on"])
        return seen

    def port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if m := re.search(r"web page at https?://[^/\s]+:(\d+)/", "".join(self.log)):
                return int(m[1])
            assert self.proc.poll() is None, "".join(self.log)
            time.sleep(0.02)
        raise AssertionError("".join(self.log))

    def switch(self, on: bool) -> None:
        port = self.port()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps({"on": on}).encode()
        headers = {"Host": f"localhost:{port}", "Content-Type": "application/json"}
        conn.request("POST", "/api/detect", body=body, headers=headers)
        reply = conn.getresponse()
        assert reply.status == 202, (reply.status, reply.read())  # accepted: the loop decides
        conn.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        self.close()
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for t in self._threads:
            t.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def run_daemon(tmp_path, face_video, sample_model) -> Iterator[Any]:
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    made: list[Daemon] = []

    def start() -> Daemon:
        d = Daemon(tmp_path, clip, sample_model, state_dir)
        made.append(d)
        return d

    yield start, state_dir
    for d in made:
        d.close()


def test_a_daemon_switched_off_is_still_off_after_a_restart(run_daemon):
    start, state_dir = run_daemon
    first = start()
    assert first.detect_records(1) == [True]  # the very first start: ON
    first.switch(False)
    assert first.detect_records(1) == [False]
    assert first.stop() == 0
    assert (state_dir / SWITCH_FILE).read_text() == "OFF\n"

    second = start()
    assert second.detect_records(1) == [False]  # as it was left
    second.port()  # running
    assert any("starts OFF, as it was left" in line for line in second.log)
    second.switch(True)
    assert second.detect_records(1) == [True]
    assert second.stop() == 0
    assert (state_dir / SWITCH_FILE).read_text() == "ON\n"

    third = start()
    assert third.detect_records(1) == [True]
    assert third.stop() == 0
