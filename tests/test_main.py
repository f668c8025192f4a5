"""``python -m edged`` is the daemon, as systemd or a user might start it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import Segment, sample_images

from edged.cli import main


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


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--fps", "-2"], "'-2' must be more than 0"),
        (["run", "--fps", "nan"], "'nan' is not a finite number"),
        (["run", "--duration", "inf"], "'inf' is not a finite number"),
        (["run", "--fps", "five"], "'five' is not a number"),
        (["detect", "x.jpg", "--min-size", "1.5"], "'1.5' must be at most 1"),
        (["detect", "x.jpg", "--max-faces", "2.5"], "'2.5' is not a whole number"),
        (["detect", "x.jpg", "--max-faces", "0"], "'0' must be at least 1"),
        (["detect", "x.jpg", "--max-pixels", "0"], "'0' must be in 1..1073741824"),
    ],
)
def test_a_bad_number_on_the_command_line_is_a_usage_error_in_one_wording(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err
