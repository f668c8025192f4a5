"""A model that loads but cannot classify never reaches the frame loop, and one bad frame
never kills the daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from conftest import Segment, sample_images, train_sample_model

from edged.errors import ModelError
from edged.vision.model_file import load_model


def _edit(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"size: 64", b"size: 3"), (b"margin: 0.", b"margin: -0.9")],
    ids=["face-size-too-small", "margin-crops-everything"],
)
def test_a_model_that_loads_but_cannot_classify_is_refused(tmp_path: Path, old: bytes, new: bytes):
    path = tmp_path / "trainer.yml"
    train_sample_model(path, ("happy", "sad"), per_class=3)
    load_model(path)  # the untouched file is fine
    _edit(path, old, new)
    with pytest.raises(ModelError):
        load_model(path)


def test_the_daemon_keeps_its_model_when_a_replacement_cannot_classify(
    tmp_path: Path, face_video, clean_env
):
    model = tmp_path / "trainer.yml"
    version = train_sample_model(model, ("happy", "sad"), per_class=4)
    clip, _ = face_video([Segment(sample_images("happy", 1)[0], 2.0)], fps=5)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edged",
            "run",
            "--source",
            str(clip),
            "--loop",
            "--model",
            str(model),
            "--no-mqtt",
            "--stdout",
            "--duration",
            "4",
            "--fps",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    bad = tmp_path / "bad.yml"
    bad.write_bytes(model.read_bytes().replace(b"size: 64", b"size: 3", 1))
    time.sleep(1.5)
    bad.replace(model)  # atomically, as a trainer would
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "too small" in err
    tail = [line for line in out.splitlines() if '"type": "frame"' in line][-3:]
    assert tail and all(version in line for line in tail)


def test_a_daemon_started_with_a_fifo_as_model_stops_on_the_first_sigterm(
    tmp_path: Path, face_video, clean_env
):
    """Its first load used to block on the FIFO: the daemon ignored SIGTERM."""
    fifo = tmp_path / "trainer.yml"
    os.mkfifo(fifo)
    clip, _ = face_video([Segment(sample_images("happy", 1)[0], 2.0)], fps=5)
    cmd = [sys.executable, "-m", "edged", "run", "--source", str(clip), "--loop"]
    cmd += ["--model", str(fifo), "--no-mqtt", "--stdout", "--fps", "5"]
    log = tmp_path / "stderr.log"
    with (
        log.open("w") as err,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc,
    ):
        framing = threading.Event()  # the sentinel: frames are being processed

        def read(out: IO[str]) -> None:
            for line in out:
                if '"type": "frame"' in line:
                    framing.set()

        assert proc.stdout is not None
        reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
        reader.start()
        try:
            assert framing.wait(30), "no frame: the daemon is stuck on the FIFO"
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            rc = proc.wait(timeout=10)
            assert time.monotonic() - t0 < 2.0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(5)
    assert rc == 0
    assert "is a named pipe, not a model file" in log.read_text()
