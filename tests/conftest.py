"""Shared fixtures: the committed sample, the optional full dataset, a model, face videos.

Fixtures for one area live in that area's own helper module (e.g. ``fixtures_broker``),
imported here so every test file sees them.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.scenes import Segment, scene, write_video  # noqa: F401 (re-exported for tests)
from edged.training import fitting
from edged.vision.detector import DetectorConfig, FaceDetector, to_gray
from edged.vision.model import WORKSHOP_CLASSES
from edged.vision.model_file import write_model
from edged.vision.pipeline import largest_face
from edged.vision.preprocess import Preprocessor

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "facial_expressions"
SHARED = ROOT.parent / "shared" / "datasets" / "facial_expressions"
CLASSES = WORKSHOP_CLASSES  # the workshop's ids: 0 anger, 1 happy, 2 sad, 3 neutral, 4 surprise

with contextlib.suppress(ImportError):  # area fixtures, each file owned by its area
    from fixtures_broker import *  # noqa: F403


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The committed sample in the workshop layout (images/ + <class>.txt)."""
    return SAMPLE


@pytest.fixture(scope="session")
def shared_dataset() -> Path:
    """The full workshop dataset beside the project; tests using it skip where it is absent."""
    if not (SHARED / "images").is_dir():
        pytest.skip(f"full dataset not present at {SHARED}")
    return SHARED


def sample_images(cls: str, limit: int | None = None) -> list[Path]:
    names = (SAMPLE / f"{cls}.txt").read_text().split()
    return [SAMPLE / "images" / n for n in names[:limit]]


@pytest.fixture(scope="session")
def sample_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trainer.yml built from the whole committed sample (all five classes)."""
    path = tmp_path_factory.mktemp("model") / "trainer.yml"
    train_sample_model(path, CLASSES)
    return path


def train_sample_model(
    path: Path,
    classes: Sequence[str],
    per_class: int | None = None,
    cfg: fitting.FitConfig | None = None,
) -> str:
    """Train on the sample with the real detector, preprocessing and fit; returns the version."""
    cfg = cfg or fitting.FitConfig()
    detector = FaceDetector(
        DetectorConfig(scale_factor=1.1, min_neighbors=4, min_size=0.2, pad=0.3)
    )
    pre = Preprocessor(cfg.preprocess)
    faces: list[np.ndarray] = []
    labels: list[int] = []
    for i, cls in enumerate(classes):
        for p in sample_images(cls, per_class):
            face = largest_face(to_gray(cv2.imread(str(p))), detector, pre)
            if face is not None:
                faces.append(face)
                labels.append(i)
    fitted = fitting.fit(faces, labels, dict(enumerate(classes)), cfg)
    return write_model(
        path, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta
    )


@pytest.fixture
def face_video(tmp_path: Path) -> Callable[..., tuple[Path, list[np.ndarray]]]:
    """Factory: ``face_video([Segment(photo, 2.0), Segment(None, 1.0)])`` → (path, frames)."""
    counter = iter(range(1000))

    def make(segments: Sequence[Segment], fps: float = 10.0) -> tuple[Path, list[np.ndarray]]:
        path = tmp_path / f"clip{next(counter)}.avi"
        return path, write_video(path, segments, fps)

    return make


@pytest.fixture(autouse=True)
def _web_page_on_any_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every daemon a test starts serves its page on a free port of its own (``port 0``),
    never the documented 8426 that a daemon on this machine may hold."""
    monkeypatch.setenv("EDGED_HTTP__PORT", "0")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGED_* or NOTIFY_SOCKET from the developer's shell leaks into a test (the
    page's free port, set by the fixture above, stays)."""
    for key in list(os.environ):
        if key == "EDGED_HTTP__PORT":
            continue
        if key.startswith("EDGED_") or key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on a free port serving a folder: (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield folder, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    t.join(5)
