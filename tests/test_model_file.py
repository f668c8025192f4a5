"""The model file gate: `load_model` reads only a regular file within the size limit,
checks every field before a model can be used, never blocks and never stalls the loop.

Model files are written here with OpenCV's own FileStorage (LBPH's text layout, as the
workshop code wrote them), from real LBPH histograms, with one field broken per case.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import ROOT, sample_images

from edged import cli
from edged.daemon.model_store import ModelStore
from edged.errors import ModelError
from edged.settings import ModelSettings
from edged.vision.model_file import MAX_MODEL_BYTES, load_model

# radius, neighbors, grid_x, grid_y: small histograms (2 x 2 x 2^4 = 64 values), fast files.
PARAMS = (1, 4, 2, 2)


@dataclass
class Spec:
    """What goes into a model file; tests break one part of it."""

    hists: list[np.ndarray]
    labels: list[Any]
    params: dict[str, Any] = field(
        default_factory=lambda: dict(
            zip(("radius", "neighbors", "grid_x", "grid_y"), PARAMS, strict=True)
        )
    )
    names: dict[int, Any] = field(default_factory=lambda: {0: "happy", 1: "sad"})
    edged: dict[str, Any] | None = None


def _faces(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(n)]


def real_spec(seed: int = 0, with_edged: bool = True) -> Spec:
    """Real LBPH histograms (4 faces, 2 classes) and a complete, valid edged node."""
    rec = cv2.face.LBPHFaceRecognizer_create(*PARAMS)
    rec.train(_faces(4, seed), np.array([0, 0, 1, 1], np.int32))
    edged = {
        "format": 1,
        "preprocess": {"size": 48, "margin": 0.0, "equalize": "clahe"},
        "temperature": 10.0,
        "calibrated": 1,
        "weights": np.full((4, 2), 0.5),
        "bias": np.zeros((1, 2)),
        "trained_images": 4,
    }
    return Spec(list(rec.getHistograms()), [0, 0, 1, 1], edged=edged if with_edged else None)


def _write_node(fs: cv2.FileStorage, key: str, value: Any) -> None:
    if isinstance(value, dict):
        fs.startWriteStruct(key, cv2.FileNode_MAP)
        for k, v in value.items():
            _write_node(fs, k, v)
        fs.endWriteStruct()
    elif isinstance(value, bool):
        fs.write(key, int(value))
    else:
        fs.write(key, value)


def write_spec(path: Path, spec: Spec) -> Path:
    """LBPH's own layout, text (as ``LBPHFaceRecognizer.write`` lays it out), plus ``edged``."""
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.startWriteStruct("opencv_lbphfaces", cv2.FileNode_MAP)
    fs.write("threshold", 1.7976931348623157e308)
    for k, v in spec.params.items():
        fs.write(k, v)
    fs.startWriteStruct("histograms", cv2.FileNode_SEQ)
    for h in spec.hists:
        fs.write("", h)
    fs.endWriteStruct()
    fs.write("labels", np.asarray(spec.labels).reshape(-1, 1))
    fs.startWriteStruct("labelsInfo", cv2.FileNode_SEQ)
    for label, name in spec.names.items():
        fs.startWriteStruct("", cv2.FileNode_MAP)
        fs.write("label", label)
        fs.write("value", name)
        fs.endWriteStruct()
    fs.endWriteStruct()
    fs.endWriteStruct()
    if spec.edged is not None:
        _write_node(fs, "edged", spec.edged)
    fs.release()
    return path


# -- every field is checked -------------------------------------------------------------


def _set(key: str, value: Any) -> Callable[[Spec], None]:
    """Set a field of the edged node (dotted: ``preprocess.size``); None deletes it."""

    def change(spec: Spec) -> None:
        assert spec.edged is not None
        *parents, leaf = key.split(".")
        node = spec.edged
        for p in parents:
            node = node[p]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value

    return change


def _all(*changes: Callable[[Spec], None]) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        for c in changes:
            c(spec)

    return change


def _lbph(key: str, value: Any) -> Callable[[Spec], None]:
    return lambda spec: spec.params.__setitem__(key, value)


def _hist(i: int, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Spec], None]:
    return lambda spec: spec.hists.__setitem__(i, fn(spec.hists[i].copy()))


def _poke(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def fn(h: np.ndarray) -> np.ndarray:
        h[0, 3] = value
        return h

    return fn


BAD: list[tuple[str, Callable[[Spec], None], str]] = [
    ("radius-0", _lbph("radius", 0), "opencv_lbphfaces.radius = 0"),
    ("radius-negative", _lbph("radius", -3), "opencv_lbphfaces.radius = -3"),
    ("radius-huge", _lbph("radius", 40), "opencv_lbphfaces.radius = 40"),
    ("neighbors-0", _lbph("neighbors", 0), "opencv_lbphfaces.neighbors = 0"),
    ("neighbors-huge", _lbph("neighbors", 30), "opencv_lbphfaces.neighbors = 30"),
    ("grid-0", _lbph("grid_x", 0), "opencv_lbphfaces.grid_x = 0"),
    ("grid-huge", _lbph("grid_y", 500), "opencv_lbphfaces.grid_y = 500"),
    ("radius-not-a-number", _lbph("radius", "two"), "opencv_lbphfaces.radius = 'two'"),
    ("histograms-nan", _hist(1, lambda h: np.full_like(h, np.nan)), "histograms[1] holds NaN"),
    ("histogram-inf", _hist(2, _poke(np.inf)), "histograms[2] holds NaN or infinite"),
    ("histogram-negative", _hist(0, _poke(-0.5)), "histograms[0] holds negative"),
    ("histogram-empty", _hist(3, lambda h: np.zeros((0, 0), np.float32)), "histograms[3] is empty"),
    ("histogram-short", _hist(1, lambda h: h[:, :10].copy()), "histograms[1] has shape 1 x 10"),
    ("histogram-float64", _hist(1, lambda h: h.astype(np.float64)), "histograms[1] holds float64"),
    ("histogram-wrong-for-params", _lbph("neighbors", 5), "not 1 x 128"),
    ("labels-negative", lambda s: s.labels.__setitem__(0, -1), "negative"),
    ("labels-one-short", lambda s: s.labels.pop(), "3 labels for 4 histograms"),
    ("labels-not-whole", lambda s: setattr(s, "labels", [0.0, 0.5, 1.0, 1.0]), "not whole numbers"),
    ("name-control-chars", lambda s: s.names.__setitem__(1, "sad\nWARNING fake"), "labelsInfo[1]"),
    ("format-newer", _set("format", 99), "written by a newer edged (edged.format = 99"),
    ("format-0", _set("format", 0), "edged.format = 0"),
    ("temperature-negative", _set("temperature", -1.0), "edged.temperature = -1.0"),
    ("temperature-zero", _set("temperature", 0.0), "edged.temperature = 0.0"),
    ("temperature-nan", _set("temperature", float("nan")), "edged.temperature = nan"),
    ("temperature-inf", _set("temperature", float("inf")), "edged.temperature = inf"),
    ("temperature-text", _set("temperature", "hot"), "edged.temperature = 'hot'"),
    ("calibrated-2", _set("calibrated", 2), "edged.calibrated = 2"),
    ("trained-images-0", _set("trained_images", 0), "edged.trained_images = 0"),
    ("trained-images-missing", _set("trained_images", None), "edged.trained_images is missing"),
    ("face-size-6000", _set("preprocess.size", 6000), "edged.preprocess.size = 6000"),
    ("face-size-3", _set("preprocess.size", 3), "edged.preprocess.size = 3: too small"),
    ("face-size-negative", _set("preprocess.size", -64), "edged.preprocess.size = -64"),
    ("margin-huge", _set("preprocess.margin", 5.0), "edged.preprocess.margin = 5.0"),
    ("margin-nan", _set("preprocess.margin", float("nan")), "edged.preprocess.margin = nan"),
    ("equalize-unknown", _set("preprocess.equalize", "sepia"), "edged.preprocess.equalize"),
    ("preprocess-missing", _set("preprocess", None), "edged.preprocess is missing"),
    ("weights-nan", _set("weights", np.full((4, 2), np.nan)), "edged.weights holds NaN"),
    ("weights-shape", _set("weights", np.ones((3, 2))), "edged.weights has shape 3 x 2, not 4 x 2"),
    ("bias-size", _set("bias", np.zeros((1, 3))), "edged.bias has shape 1 x 3, not 1 x 2"),
    ("bias-inf", _set("bias", np.array([[0.0, np.inf]])), "edged.bias holds NaN"),
    ("weights-without-bias", _set("bias", None), "edged.bias is missing"),
    ("readouts-missing", _set("format", 2), "edged.readouts is missing"),
    ("readouts-all", _all(_set("format", 2), _set("readouts", 4)), "edged.readouts = 4"),
    ("readouts-negative", _all(_set("format", 2), _set("readouts", -1)), "edged.readouts = -1"),
    ("readouts-text", _all(_set("format", 2), _set("readouts", "1")), "edged.readouts = '1'"),
    (
        "readouts-without-scorer",
        _all(_set("format", 2), _set("readouts", 1), _set("weights", None), _set("bias", None)),
        "readouts need edged.weights",
    ),
]


@pytest.fixture
def good_model(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "good.yml", real_spec())


def test_the_hand_written_good_model_loads(good_model: Path):
    """The base every bad case below breaks in one place is itself a usable model."""
    model = load_model(good_model)
    assert model.class_names() == ["happy", "sad"]
    assert model.source == "edged"
    assert model.meta.preprocess.size == 48


@pytest.mark.parametrize(("change", "named"), [(c, n) for _, c, n in BAD], ids=[i for i, *_ in BAD])
def test_every_bad_field_is_refused_naming_it_and_never_replaces_the_working_model(
    tmp_path: Path, good_model: Path, change: Callable[[Spec], None], named: str
):
    spec = copy.deepcopy(real_spec())
    change(spec)
    bad = write_spec(tmp_path / "bad.yml", spec)
    with pytest.raises(ModelError) as err:
        load_model(bad)
    message = str(err.value)
    assert named in message
    assert str(bad) in message
    assert "\n" not in message  # one line
    # Hot swap: the store keeps its working model.
    live = tmp_path / "trainer.yml"
    live.write_bytes(good_model.read_bytes())
    store = ModelStore(live, poll_interval=60.0)
    good = store.load_now()
    assert good.state == "loaded"
    working = store.current
    os.replace(bad, live)
    status = store.poll_once()
    assert store.current is working
    assert status.version == good.version
    assert named in (status.error or "")


def test_format_1_files_load_as_before_and_format_2_readouts_are_no_class_distance(
    tmp_path: Path,
):
    """edged's first files (format 1, no readouts) still load and answer as before; in a
    format-2 file the last ``readouts`` histograms feed the scorer only: a face's distance
    to its class leaves them out."""
    old = load_model(write_spec(tmp_path / "old.yml", real_spec()))
    assert old.meta.format == 1 and old.meta.readouts == 0
    spec = real_spec()
    assert spec.edged is not None
    spec.edged.update(format=2, readouts=1)
    new = load_model(write_spec(tmp_path / "new.yml", spec))
    assert new.meta.format == 2 and new.meta.readouts == 1
    face = _faces(1, 9)[0]
    dist = new.recognizer  # the same histograms, so the same LBPH distances
    collector = cv2.face.StandardCollector.create()
    dist.predict_collect(face, collector)
    d = np.array([v for _, v in collector.getResults(False)])
    # Class 0 (histograms 0, 1) is unchanged; class 1 now counts histogram 2 only.
    got = new.class_distances(face)
    assert got[0] == pytest.approx(old.class_distances(face)[0])
    assert got[1] == pytest.approx(d[2])
    # The scorer reads every histogram, readouts included: same answer as format 1.
    a, b = old.predict_face(face), new.predict_face(face)
    assert (a.expression, a.confidence) == (b.expression, pytest.approx(b.confidence))


def test_a_workshop_model_with_nan_histograms_is_refused_not_answering_anger(tmp_path: Path):
    """What the issue saw: all-NaN histograms answered "anger", 1.0, distance 0."""
    spec = real_spec(with_edged=False)
    spec.names = {}
    spec.hists = [np.full_like(h, np.nan) for h in spec.hists]
    path = write_spec(tmp_path / "trainer.yml", spec)
    with pytest.raises(ModelError, match=r"histograms\[0\] holds NaN"):
        load_model(path)


def test_a_workshop_model_without_edged_node_still_loads_with_raw_crops(tmp_path: Path):
    spec = real_spec(with_edged=False)
    spec.names = {}
    model = load_model(write_spec(tmp_path / "trainer.yml", spec))
    assert model.source == "workshop"
    assert model.meta.preprocess.size == 0
    assert model.class_names() == ["anger", "happy"]  # the workshop's ids 0 and 1


# -- only a regular file, within the size limit --------------------------------------------


def _in_thread(fn: Callable[[], object], timeout: float) -> tuple[bool, object]:
    """(finished, result or exception) of ``fn`` run in a daemon thread for ``timeout`` s."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return (not t.is_alive()), (out[0] if out else None)


def test_a_fifo_as_model_file_is_refused_at_once_never_waited_on(tmp_path: Path):
    fifo = tmp_path / "trainer.yml"
    os.mkfifo(fifo)
    done, result = _in_thread(lambda: load_model(fifo), timeout=5.0)
    assert done, "load_model blocked on a FIFO"
    assert isinstance(result, ModelError)
    assert f"{fifo} is a named pipe, not a model file" in str(result)


def test_a_directory_as_model_file_is_a_model_error(tmp_path: Path):
    with pytest.raises(ModelError, match="is a folder, not a model file"):
        load_model(tmp_path)


def test_a_link_to_dev_zero_is_refused_at_once_without_growing_memory(tmp_path: Path):
    """Used to read /dev/zero until memory ran out (1.3 GB in 2 s)."""
    link = tmp_path / "trainer.yml"
    link.symlink_to("/dev/zero")
    probe = (
        "import sys\n"
        "from edged.vision.model_file import load_model\n"
        "from edged.errors import ModelError\n"
        "try:\n"
        "    load_model(sys.argv[1])\n"
        "except ModelError as e:\n"
        "    print(e)\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(link)],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
        cwd=ROOT,
    ).stdout.splitlines()
    assert (
        out[0] == f"model file {link} (a link to /dev/zero) is a character device, not a model file"
    )
    assert int(out[1]) < 300_000  # kB: python + OpenCV, nothing read


def test_a_file_over_the_size_limit_is_refused_without_being_read(tmp_path, monkeypatch):
    big = tmp_path / "trainer.yml"
    with open(big, "wb") as f:
        f.truncate(MAX_MODEL_BYTES + 1)  # sparse: 160 MB of nothing

    def no_reading(*args: object) -> bytes:
        raise AssertionError("the file was read")

    monkeypatch.setattr(os, "pread", no_reading)
    monkeypatch.setattr(os, "read", no_reading)
    with pytest.raises(ModelError) as err:
        load_model(big)
    assert str(err.value) == (
        f"model file {big} is 160.0 MB, above model.max_size_mb = 160; "
        "raise it if this is really your model"
    )
    with pytest.raises(ModelError, match=r"above model.max_size_mb = 0.001"):
        load_model(write_spec(tmp_path / "small.yml", real_spec()), max_bytes=1000)


def test_the_size_limit_setting_and_the_loader_default_agree():
    assert ModelSettings().max_bytes == MAX_MODEL_BYTES
    assert ModelSettings(max_size_mb=250).max_bytes == 250_000_000


@pytest.mark.parametrize("kind", ["fifo", "directory", "empty-histogram"])
def test_edged_detect_with_an_unusable_model_exits_66_with_one_line(tmp_path, capsys, kind):
    if kind == "fifo":
        model = tmp_path / "fifo.yml"
        os.mkfifo(model)
    elif kind == "directory":
        model = tmp_path / "models"
        model.mkdir()
    else:
        spec = real_spec()
        spec.hists[0] = np.zeros((0, 0), np.float32)
        model = write_spec(tmp_path / "trainer.yml", spec)
    arg = str(model) + ("/" if kind == "directory" else "")
    photo = sample_images("happy", 1)[0]
    done, rc = _in_thread(lambda: cli.main(["detect", str(photo), "--model", arg]), 20.0)
    assert done, "edged detect hung"
    assert rc == 66
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edged: error: model file")


# -- never hangs: OpenCV's base64 reader ---------------------------------------------------

HANG_PROBE = """
import sys, time
from edged.vision.model_file import load_model
from edged.errors import ModelError
for path in sys.argv[1:]:
    t = time.monotonic()
    try:
        load_model(path)
        print("loaded", path, flush=True)
    except ModelError as e:
        print(f"refused {time.monotonic() - t:.2f}", e, flush=True)
"""


def _base64_variants(tmp_path: Path) -> list[Path]:
    """One small matrix in base64 in YAML, XML and JSON, each with a header OpenCV's reader
    spins on forever (no element type), and YAML/XML spellings OpenCV reads differently."""
    import base64

    def header(fmt: str) -> str:
        return base64.b64encode(fmt.ljust(24).encode()).decode()

    out = []
    for ext in ("yml", "xml", "json"):
        flags = cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY | cv2.FILE_STORAGE_BASE64
        fs = cv2.FileStorage(f"m.{ext}", flags)
        fs.write("m", np.arange(6, dtype=np.float32).reshape(1, 6))
        text = fs.releaseAndGetString()
        assert header("1f") in text
        for fmt in ("", "5"):
            out.append((f"{ext}-{fmt or 'none'}", text.replace(header("1f"), header(fmt))))
        if ext == "yml":
            bad = text.replace(header("1f"), header(""))
            out.append(("yml-tag", bad.replace("!!binary", "!<tag:yaml.org,2002:binary>")))
            out.append(("yml-same-line", bad.replace("!!binary |\n      ", "!!binary | ")))
            out.append(("yml-comment", bad.replace("!!binary |\n", "!!binary | # c\n   # c\n")))
        if ext == "xml":
            bad = text.replace(header("1f"), header(""))
            out.append(("xml-spaced", bad.replace('type_id="binary"', 'type_id = "binary"')))
    paths = []
    for name, text in out:
        p = tmp_path / f"{name}.model"
        p.write_text(text)
        paths.append(p)
    return paths


def test_base64_blocks_opencv_would_spin_on_forever_are_refused_at_once(tmp_path: Path):
    paths = _base64_variants(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", HANG_PROBE, *map(str, paths)],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,  # each one, unguarded, never returns
        cwd=ROOT,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == len(paths), proc.stderr
    for line in lines:
        assert line.startswith("refused ")
        assert float(line.split()[1]) < 1.0
        assert "base64 block" in line


def test_edged_own_base64_model_still_loads(sample_model: Path):
    """The check lets through what OpenCV (write_model) writes."""
    assert b"!!binary" in sample_model.read_bytes()
    assert load_model(sample_model).source == "edged"


# -- never stalls the frame loop -------------------------------------------------------------


def workshop_model(path: Path, faces: int) -> Path:
    """What the workshop's code wrote: LBPH defaults, plain ``write()`` (~100 KB a face)."""
    rec = cv2.face.LBPHFaceRecognizer_create()
    rec.train(_faces(faces, 7), np.arange(faces, dtype=np.int32) % 5)
    rec.write(str(path))
    return path


def _longest_gil_gap(fn: Callable[[], object]) -> float:
    """The longest time (s) another Python thread waited to run while ``fn`` ran."""
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    t = threading.Thread(target=tick)
    t.start()
    time.sleep(0.05)
    try:
        fn()
    finally:
        stop.set()
        t.join()
    return max(gaps)


@pytest.mark.slow
def test_loading_a_big_workshop_model_never_holds_the_gil_long(tmp_path: Path):
    """A 90 MB text model: the loop's thread always gets to run within the interpreter's
    5 ms switch interval and a little. (Reading the file as Python bytes and searching them
    held the GIL 45-90 ms at a time on a PC, seconds on a Pi: ticks were skipped.)"""
    path = workshop_model(tmp_path / "trainer.yml", 1000)
    assert path.stat().st_size > 90e6
    # The best of two: a loaded machine can delay one wake-up, not every one.
    gap = min(_longest_gil_gap(lambda: load_model(path)) for _ in range(2))
    assert gap < 0.025, f"another thread waited {gap * 1000:.0f} ms for the GIL"


RSS_PROBE = """
import os, shutil, sys
from edged.daemon.model_store import ModelStore
small, big, live = sys.argv[1:4]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
shutil.copyfile(small, live)
store = ModelStore(live)
store.load_now()
base = rss()
shutil.copyfile(big, live + ".tmp"); os.replace(live + ".tmp", live)
assert store.poll_once().samples > 100, store.status
loaded = rss()
shutil.copyfile(small, live + ".tmp"); os.replace(live + ".tmp", live)
assert store.poll_once().samples == 4, store.status
print(base, loaded, rss())
"""


@pytest.mark.slow
def test_a_swapped_out_big_model_gives_its_memory_back(tmp_path: Path):
    small = write_spec(tmp_path / "small.yml", real_spec())
    big = workshop_model(tmp_path / "big.yml", 400)  # ~40 MB of text, ~26 MB of histograms
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(small), str(big), str(tmp_path / "trainer.yml")],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    base, loaded, after = map(float, out.stdout.split())
    assert loaded > base + 20  # the big model was really in memory
    assert after < base + 15, json.dumps({"base": base, "loaded": loaded, "after": after})


def test_the_configured_size_limit_reaches_edged_detect_and_the_daemon(
    sample_model: Path, tmp_path: Path, capsys, clean_env
):
    """model.max_size_mb is honoured by every loader the commands build, not only the default."""
    from edged.commands.run import build_service
    from edged.settings import load_settings

    cfg = tmp_path / "edged.toml"
    cfg.write_text("[model]\nmax_size_mb = 0.5\n[mqtt]\nenabled = false\n")
    photo = str(sample_images("happy", 1)[0])
    rc = cli.main(["detect", photo, "--model", str(sample_model), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 66 and "above model.max_size_mb = 0.5" in err
    svc = build_service(load_settings(cfg, {"model": {"path": str(sample_model)}}), [])
    try:
        status = svc.store.load_now()
        assert status.state == "error" and "model.max_size_mb" in (status.error or "")
    finally:
        svc.inbox.close()
