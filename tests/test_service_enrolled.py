"""``edged run`` with enrolled faces (issue 17, part C): the real daemon on a looping clip,
the real ``edged enroll`` beside it, the JSON lines read as they come.

The daemon finds the store where the service keeps it by default: ``enrolled`` beside
the model file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Segment, sample_images
from test_service import LIVENESS, RELOAD_ENV, Daemon

from edged.enrollment.store import MARKER
from edged.vision.model_file import load_model

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(tmp_path, *args, env=env)
        made.append(d)
        return d

    yield start
    for d in made:
        d.close()


@pytest.fixture
def model(tmp_path: Path, sample_model: Path) -> Path:
    path = tmp_path / "trainer.yml"
    shutil.copyfile(sample_model, path)
    return path


@pytest.fixture
def running(daemon: Callable[..., Daemon], face_video: Callable[..., Any], model: Path) -> Daemon:
    """The daemon on a looping clip of one face, classifying with the model file alone."""
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    d = daemon(
        "--source", str(clip), "--loop", "--model", str(model), "--fps", "10",
        "--stats-interval", "1", env=RELOAD_ENV,
    )  # fmt: skip
    base = load_model(model).version
    d.expect(lambda r: r["type"] == "frame" and r["model_version"] == base and r["faces"])
    return d


def edged_enroll(model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, as a user runs it beside the daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    store = model.parent / "enrolled"
    done = subprocess.run(
        [sys.executable, "-m", "edged", "enroll", "--store", str(store), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def add(model: Path, person: str, expression: str, n: int = 2) -> None:
    photos = [str(p) for p in sample_images(expression, n)]
    edged_enroll(model, "--model", str(model), "--from", *photos, "--person", person,
                 "--expression", expression)  # fmt: skip


def model_record(version: Callable[[str | None], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["type"] == "model" and version(r["version"])


def stop(d: Daemon) -> None:
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=LIVENESS) == 0, d.stderr()
    assert "Traceback" not in d.stderr()


def test_edged_enroll_beside_the_daemon_changes_its_model_in_memory_never_the_file(
    running: Daemon, model: Path
) -> None:
    base = load_model(model).version
    before, st = model.read_bytes(), os.stat(model)
    add(model, "alice", "happy")
    add(model, "alice", "sad")
    rec = running.expect(model_record(lambda v: v != base))
    assert rec["state"] == "loaded" and rec["enrolled_people"] == 1
    new = rec["version"]
    frame = running.expect(lambda r: r["type"] == "frame" and r["model_version"] == new)
    assert frame["faces"][0]["expression"] is not None
    assert "alice" not in json.dumps(running.records), "names stay off the outputs"
    stats = running.expect(lambda r: r["type"] == "stats")
    assert stats["model"]["enrolled_people"] == 1
    stop(running)
    assert model.read_bytes() == before
    after = os.stat(model)
    assert (after.st_mtime_ns, after.st_ino) == (st.st_mtime_ns, st.st_ino)
    assert "with 1 enrolled person" in running.stderr()


def test_forgetting_everyone_or_removing_the_store_brings_the_model_file_back(
    running: Daemon, model: Path
) -> None:
    base = load_model(model).version
    add(model, "alice", "happy")
    running.expect(model_record(lambda v: v != base))
    edged_enroll(model, "--forget", "alice")
    rec = running.expect(model_record(lambda v: v == base))
    assert rec["enrolled_people"] == 0
    running.expect(lambda r: r["type"] == "frame" and r["model_version"] == base)

    add(model, "bob", "sad")
    running.expect(model_record(lambda v: v != base))
    shutil.rmtree(model.parent / "enrolled")
    rec = running.expect(model_record(lambda v: v == base))
    assert rec["state"] == "loaded" and rec["error"] is None
    stop(running)


def test_bad_crops_and_a_store_prepared_differently_cost_a_warning_never_the_daemon(
    running: Daemon, model: Path
) -> None:
    base = load_model(model).version
    add(model, "alice", "happy")
    first = running.expect(model_record(lambda v: v != base))["version"]
    folder = model.parent / "enrolled" / "alice" / "happy"
    (folder / "00damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    shutil.copyfile(sample_images("sad")[0], folder / "01photo.png")  # a JPEG, not a crop
    (folder / "02link.png").symlink_to(sample_images("sad")[1])
    add(model, "bob", "sad")  # the good crops are used: a new model with both
    rec = running.expect(model_record(lambda v: v not in (base, first)))
    assert rec["enrolled_people"] == 2
    marker = model.parent / "enrolled" / MARKER
    body = json.loads(marker.read_text())
    body["preprocess"]["size"] = 48
    marker.write_text(json.dumps(body))
    add_more = folder / "03extra.png"  # a change the poll sees (the marker is no crop)
    shutil.copyfile(next(folder.glob("[0-9a-f]*.png")), add_more)
    rec = running.expect(model_record(lambda v: v == base))
    assert rec["state"] == "loaded" and rec["enrolled_people"] == 0
    running.expect(lambda r: r["type"] == "frame" and r["model_version"] == base)
    stop(running)
    err = running.stderr()
    for needle in ("00damaged.png", "01photo.png", "02link.png", "prepared as 48x48"):
        assert err.count(needle) == 1, (needle, err)
    warned = [line for line in err.splitlines() if "00damaged.png" in line]
    assert "WARNING" in warned[0]
