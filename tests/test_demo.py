"""`make demo` on a machine with no camera and no broker: the real command, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from edged.commands.demo import Segment, scene, write_video


@pytest.mark.slow
def test_demo_trains_runs_the_daemon_on_a_clip_and_prints_json_and_a_summary(tmp_path):
    work = tmp_path / "demo"
    proc = subprocess.run(
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
        timeout=120,
        cwd=tmp_path,
    )
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
