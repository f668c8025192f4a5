"""``python -m edged`` is the daemon, as systemd or a user might start it."""

from __future__ import annotations

import subprocess
import sys

from conftest import Segment, sample_images


def test_python_dash_m_edged_with_only_run_options_starts_the_daemon(face_video, clean_env):
    clip, _ = face_video([Segment(sample_images("happy", 1)[0], 1.0)], fps=5)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "--source",
            str(clip),
            "--no-mqtt",
            "--stdout",
            "--duration",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"type": "stats"' in proc.stdout


def test_python_dash_m_edged_help_lists_the_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "edged", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    for command in ("run", "detect", "config", "ha-remove"):
        assert command in proc.stdout
