"""Fuzzing what users hand edged: model files and settings (hypothesis).

The promise, for every input: `load_model` gives a model that answers sanely or refuses
with a `ModelError`; a running daemon's store never swaps a good model for a worse one;
`edged detect --model` and `edged config check` end in 0 or a documented status with one
clear line, never 70 (a bug) and never a hang. Bounded: well under a minute in all.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, sample_images
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edged.cli import main
from edged.daemon.model_store import ModelStore
from edged.errors import ModelError
from edged.settings import Settings
from edged.vision.detector import IMAGE_DETECTOR, FaceDetector, to_gray
from edged.vision.model import ExpressionModel
from edged.vision.model_file import load_model

FUZZ = settings(
    max_examples=120,
    deadline=None,  # a slow example is caught by the time check below, with its input
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
SLOW_LOAD_S = 5.0  # no input may keep the loader this long (the real ones take ~30 ms)


# -- seeds: a real edged model and a real workshop-style model -----------------------------


@pytest.fixture(scope="session")
def workshop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the workshop's code wrote: LBPH defaults, text YAML, no edged node."""
    rng = np.random.default_rng(3)
    faces = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(5)]
    rec = cv2.face.LBPHFaceRecognizer.create()
    rec.train(faces, np.arange(5, dtype=np.int32))
    path = tmp_path_factory.mktemp("workshop") / "trainer.yml"
    rec.write(str(path))
    return path


@pytest.fixture(scope="session")
def probe_faces() -> list[tuple[np.ndarray, object]]:
    """Real sample photos and their largest face box, to ask a loaded model about."""
    detector = FaceDetector(IMAGE_DETECTOR)
    out = []
    for cls in CLASSES[:3]:
        gray = to_gray(cv2.imread(str(sample_images(cls, 1)[0])))
        boxes = detector.detect(gray)
        assert boxes
        out.append((gray, boxes[0]))
    return out


def answers_sanely(model: ExpressionModel, faces: list[tuple[np.ndarray, object]]) -> None:
    """A model that loaded must classify: a known class, a confidence in 0..1, no NaN."""
    names = set(model.class_names())
    for gray, box in faces:
        p = model.predict(gray, box)  # type: ignore[arg-type]
        assert p.expression in names
        assert math.isfinite(p.confidence) and 0.0 <= p.confidence <= 1.0
        assert not math.isnan(p.distance)


# -- mutations -------------------------------------------------------------------------------

SCALAR_KEYS = (
    "threshold", "radius", "neighbors", "grid_x", "grid_y", "rows", "cols", "dt", "format",
    "size", "margin", "equalize", "temperature", "calibrated", "trained_images", "label",
    "value",
)  # fmt: skip
NASTY_SCALARS = (
    ".Nan", ".nan", "nan", ".Inf", "-.Inf", "inf", "0", "-1", "-3", "6000", "99", "1e308",
    "-1e308", "2147483648", "99999999999999999999", "0.", "''", '""', "[]", "{}", "x", "",
    "clahe", "none", "hist", "1", "2", "32", "64", "i", "f", "d", "u", "!!binary |",
)  # fmt: skip
NASTY_NUMBERS = (".Nan", ".Inf", "-.Inf", "-1.", "-0.5", "1e38", "3.4e38", "0.", "1", "x", "")


def scalar_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NASTY_SCALARS),
        st.integers(-(2**40), 2**40).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=12).map(json.dumps),
    )


@st.composite
def mutated_model(draw: st.DrawFn, edged: bytes, workshop: bytes) -> bytes:
    """One of: a truncation, a field set to a nasty value, histogram numbers made nasty
    (text models), a run of random bytes, or a few lines dropped or repeated."""
    base = draw(st.sampled_from([edged, workshop]))
    kind = draw(st.sampled_from(["truncate", "field", "numbers", "bytes", "lines"]))
    if kind == "truncate":
        return base[: draw(st.integers(0, len(base)))]
    if kind == "field":
        text = base.decode()
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(SCALAR_KEYS))
            matches = list(re.finditer(rf"(?m)^(\s*{key}:)[^\n]*$", text))
            if matches:
                m = draw(st.sampled_from(matches))
                text = f"{text[: m.start()]}{m.group(1)} {draw(scalar_text())}{text[m.end() :]}"
        return text.encode()
    if kind == "numbers" and base is workshop:
        text = base.decode()
        numbers = list(re.finditer(r"\d+\.\d*(?:e[-+]\d+)?", text))
        picks = draw(st.lists(st.integers(0, len(numbers) - 1), min_size=1, max_size=40))
        for i in sorted(set(picks), reverse=True):
            m = numbers[i]
            text = text[: m.start()] + draw(st.sampled_from(NASTY_NUMBERS)) + text[m.end() :]
        return text.encode()
    if kind == "lines":
        lines = base.split(b"\n")
        i = draw(st.integers(0, len(lines) - 1))
        n = draw(st.integers(1, 20))
        return b"\n".join(lines[:i] + (lines[i : i + n] * 2 if draw(st.booleans()) else []) +
                          lines[i + n :])  # fmt: skip
    start = draw(st.integers(0, len(base)))
    noise = draw(st.binary(min_size=1, max_size=64))
    return base[:start] + noise + base[start + len(noise) :]


@pytest.fixture(scope="session")
def seeds(sample_model: Path, workshop_model: Path) -> tuple[bytes, bytes]:
    return sample_model.read_bytes(), workshop_model.read_bytes()


def _mutations(seeds: tuple[bytes, bytes]) -> st.SearchStrategy[bytes]:
    return mutated_model(*seeds)


@pytest.fixture
def fuzz_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "fuzz"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- model files -----------------------------------------------------------------------------


def test_any_model_file_loads_into_a_sane_model_or_is_refused_with_a_model_error(
    seeds, probe_faces, fuzz_dir
):
    import time

    @FUZZ
    @given(data=_mutations(seeds))
    def check(data: bytes) -> None:
        path = fuzz_dir / "trainer.yml"
        path.write_bytes(data)
        t0 = time.monotonic()
        try:
            model = load_model(path)
        except ModelError as e:
            assert str(e) and "\n" not in str(e), "one clear line"
        else:
            answers_sanely(model, probe_faces)
        assert time.monotonic() - t0 < SLOW_LOAD_S

    check()


def test_a_running_store_never_swaps_a_good_model_for_a_worse_one(
    seeds, probe_faces, fuzz_dir, sample_model
):
    path = fuzz_dir / "trainer.yml"
    shutil.copyfile(sample_model, path)
    store = ModelStore(path)
    good = store.load_now()
    assert good.state == "loaded"

    @FUZZ
    @given(data=_mutations(seeds))
    def check(data: bytes) -> None:
        shutil.copyfile(sample_model, path)
        store.request_reload()
        store.poll_once()
        before = store.current
        assert before is not None and before.version == good.version
        tmp = fuzz_dir / ".next.yml"
        tmp.write_bytes(data)
        os.replace(tmp, path)  # as a user's `mv` or edged-train does
        store.request_reload()
        status = store.poll_once()
        now = store.current
        assert now is not None, "a model once loaded is never dropped"
        if now.version != good.version:
            answers_sanely(now, probe_faces)  # replaced only by a model that works
        else:
            assert status.state == "loaded"

    check()


def test_edged_detect_with_any_model_file_exits_0_or_66_with_one_line(
    seeds, fuzz_dir, capsys, clean_env
):
    photo = str(sample_images("happy", 1)[0])

    @settings(FUZZ, max_examples=40)
    @given(data=_mutations(seeds))
    def check(data: bytes) -> None:
        path = fuzz_dir / "trainer.yml"
        path.write_bytes(data)
        rc = main(["detect", photo, "--model", str(path), "--json"])
        err = capsys.readouterr().err
        assert rc in (0, 66), err
        assert "Traceback" not in err
        if rc == 66:
            assert err.startswith("edged: error: ") and err.count("\n") == 1, err

    check()


# -- settings ------------------------------------------------------------------------------

SECTIONS = {
    name: tuple(info.annotation.model_fields)  # type: ignore[union-attr]
    for name, info in Settings.model_fields.items()
}


def toml_value(depth: int = 0) -> st.SearchStrategy[str]:
    """TOML source text for a value of any type, including the nasty ones."""
    leaves = st.one_of(
        st.integers(-(2**63), 2**63 - 1).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(
            lambda f: (
                "nan"
                if math.isnan(f)
                else ("inf" if f > 0 else "-inf")
                if math.isinf(f)
                else repr(f)
            )
        ),
        st.booleans().map(lambda b: "true" if b else "false"),
        st.text(max_size=30).map(json.dumps),
        st.sampled_from(['"0"', '""', '"/dev/null"', '"rtsp://u:p@h/x"', '"a!b"', "1979-05-27"]),
    )
    if depth >= 1:
        return leaves
    return st.one_of(
        leaves,
        st.lists(toml_value(depth + 1), max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    )


@st.composite
def toml_document(draw: st.DrawFn) -> bytes:
    lines = []
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "camra"]), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys = SECTIONS.get(section, ("source",))
        for key in draw(st.lists(st.sampled_from([*keys, "bogus"]), max_size=4, unique=True)):
            lines.append(f"{key} = {draw(toml_value())}")
    text = "\n".join(lines) + "\n"
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]))
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data)))
        data = data[:start] + draw(st.binary(max_size=8)) + data[start:]
    return data


def _config_check(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["config", "check", *args])
    event(f"exit {rc}")
    err = capsys.readouterr().err
    assert rc in (0, 78), err
    assert "Traceback" not in err
    if rc == 78:
        assert err.startswith("edged: error: "), err


def test_any_settings_file_is_accepted_or_refused_with_exit_78(fuzz_dir, capsys, clean_env):
    @settings(FUZZ, max_examples=150)
    @given(data=toml_document())
    def check(data: bytes) -> None:
        path = fuzz_dir / "edged.toml"
        path.write_bytes(data)
        _config_check(["--config", str(path)], capsys)

    check()


@st.composite
def environment(draw: st.DrawFn) -> dict[str, str]:
    env: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from([*SECTIONS, "CAMRA", ""]))
        keys = SECTIONS.get(section, ("source",))
        name = f"EDGED_{section}__{draw(st.sampled_from([*keys, 'bogus']))}".upper()
        if not section or draw(st.integers(0, 9)) == 0:
            name = f"EDGED_{section.upper() or 'MQTT'}"  # a whole section as JSON (or not)
        value = draw(st.one_of(st.text(max_size=20), toml_value(1), st.just('{"host": ""}')))
        env[name] = value.replace("\x00", "")
    return env


def test_any_environment_is_accepted_or_refused_with_exit_78(capsys, clean_env):
    @settings(FUZZ, max_examples=150)
    @given(env=environment())
    def check(env: dict[str, str]) -> None:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            _config_check([], capsys)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    check()
