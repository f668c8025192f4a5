"""`make demo` on a machine with no camera and no broker: the real command, end to end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import cv2
import pytest

from edged.commands.demo import PAGE_PORT, Segment, page_port, scene, write_video

ADDRESS = re.compile(r"^demo: the web page: (http://localhost:(\d+)/) ", re.M)


@contextlib.contextmanager
def page_port_taken() -> Iterator[None]:
    """The page's usual port in use, as by an installed edged (here, or by whoever holds it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # taken already: all the better
            s.bind(("127.0.0.1", PAGE_PORT))
            s.listen()
        yield


def env_without_port() -> dict[str, str]:
    """The environment, without the free port every test's daemon gets (conftest): the
    demo must find one by itself."""
    return {k: v for k, v in os.environ.items() if k != "EDGED_HTTP__PORT"}


@pytest.mark.slow
def test_demo_trains_runs_the_daemon_on_a_clip_and_prints_json_and_a_summary(tmp_path):
    work = tmp_path / "demo"
    with page_port_taken():
        proc = run_demo(tmp_path, work)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    frames = [r for r in records if r["type"] == "frame"]
    assert frames, proc.stderr
    seen = {f["faces"][0]["expression"] for f in frames if f["faces"]}
    assert len(seen) >= 3  # several expressions, classified by the model it trained
    assert any(not f["faces"] for f in frames)  # and the empty room in between
    assert (work / "trainer.yml").is_file() and (work / "clip.avi").is_file()
    assert records[-1]["type"] == "stats"
    assert "summary:" in proc.stderr and "next:" in proc.stderr
    assert "edged run --source 0" in proc.stderr
    # The page was up on a free port while the clip played, and the demo said where.
    address = ADDRESS.search(proc.stderr)
    assert address, proc.stderr
    assert int(address[2]) not in (0, PAGE_PORT)
    assert f"page:  {address[1]}" in proc.stderr
    assert "make demo-serve" in proc.stderr
    assert " INFO " not in proc.stderr  # the daemon's INFO lines stay hidden, as before


def run_demo(cwd, work) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "demo",
            "--workdir",
            str(work),
            "--seconds",
            "1",
            "--no-mqtt",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=100,
        cwd=cwd,
        env=env_without_port(),
    )


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def get(url: str) -> tuple[int, str]:
    try:
        with DIRECT.open(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.slow
def test_demo_serve_keeps_the_page_up_until_stopped_and_says_where(tmp_path):
    cmd = [sys.executable, "-m", "edged", "demo", "--workdir", str(tmp_path / "demo")]
    cmd += ["--seconds", "0.5", "--no-mqtt", "--serve", "90"]
    lines: list[str] = []
    found = threading.Event()

    def read(stream) -> None:
        for line in stream:
            lines.append(line)
            if ADDRESS.search(line):
                found.set()

    with page_port_taken():  # the usual port is preferred when free; here it is not
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env_without_port(),
        )
        reader = threading.Thread(target=read, args=(proc.stderr,), daemon=True)
        reader.start()
        try:
            assert found.wait(90), "".join(lines)
            address = ADDRESS.search("".join(lines))
            assert address and int(address[2]) != PAGE_PORT, "".join(lines)
            url = address[1]
            deadline = time.monotonic() + 20
            status, body = get(url + "healthz")
            while status != 200 and time.monotonic() < deadline:  # "starting" at first
                time.sleep(0.2)
                status, body = get(url + "healthz")
            assert (status, body) == (200, "ok\n")
            time.sleep(1.5)  # longer than the 0.5 s clip plays: it loops, the page stays
            assert get(url + "healthz")[0] == 200
            proc.send_signal(signal.SIGTERM)  # as Ctrl-C: passed on, a clean stop
            # stdout only: stderr is the reader thread's (communicate() would race it
            # for the last lines, 'summary:' among them).
            assert proc.stdout is not None
            out = proc.stdout.read()
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        reader.join(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert "(live view, state, stats) for 90 s; Ctrl-C stops" in err
    records = [json.loads(line) for line in out.splitlines()]
    assert not [r for r in records if r["type"] == "frame"]  # not echoed while serving
    assert records[-1]["type"] == "stats" and records[-1]["frames"] > 0
    assert "summary:" in err
    with pytest.raises(OSError):  # the daemon went with the demo
        DIRECT.open(url + "healthz", timeout=5)


def test_the_demo_page_port_is_one_it_can_have():
    assert page_port(False, {}) == "0"  # any free port: the daemon logs which
    assert page_port(True, {"EDGED_HTTP__PORT": "9000"}) == "9000"  # the user's, if set
    with page_port_taken():
        assert page_port(True, {}) == "0"


def test_demo_help_documents_serve():
    proc = subprocess.run(
        [sys.executable, "-m", "edged", "demo", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = " ".join(proc.stdout.split())
    assert "--serve [SECONDS]" in text and "until Ctrl-C" in text
    assert "make demo-serve" in text


def test_demo_without_the_sample_says_where_it_looked(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edged", "demo", "--workdir", str(tmp_path), "--dataset", "nope"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 66
    assert "no dataset at nope" in proc.stderr


def test_a_clip_has_each_segment_for_its_duration_and_reads_back_with_videocapture(
    tmp_path, sample_dir
):
    photo = sorted((sample_dir / "images").iterdir())[0]
    path = tmp_path / "c.avi"
    frames = write_video(path, [Segment(photo, 0.5), Segment(None, 0.3)], fps=10)
    assert len(frames) == 2 and (frames[0] != frames[1]).any()
    assert (frames[1] == scene(None)).all()  # the empty room is the same every time
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 5 + 3
