"""The benchmark keeps working as the code it measures changes (it is run, not asserted on)."""

from __future__ import annotations

import sys

import cv2
import pytest
from conftest import CLASSES, ROOT, SAMPLE, sample_images, scene

sys.path.insert(0, str(ROOT))

from bench.__main__ import main
from bench.workshop import Workshop
from edged.vision.model_file import load_model


def test_workshop_model_written_by_the_bench_loads_in_edged_as_a_workshop_model(tmp_path):
    ws = Workshop()
    crops, labels = [], []
    for i, cls in enumerate(CLASSES):
        for p in sample_images(cls, 6):
            for c in ws.training_crops(cv2.imread(str(p))):
                crops.append(c)
                labels.append(i)
    assert len(set(labels)) == len(CLASSES), "the workshop's double detection found no faces"
    ws.train(crops, labels)
    path = tmp_path / "trainer.yml"
    ws.write(path)
    model = load_model(path)
    assert model.source == "workshop"
    assert model.samples == len(crops)
    frame = scene(sample_images("happy", 1)[0], face_px=300)
    (face,) = ws.process(frame)
    assert ws.expression(face.label) in CLASSES


@pytest.mark.slow
@pytest.mark.timeout(420)  # the whole bench, shrunk: ~35 s, ~25 s of live daemons, ~30 s of motion
def test_bench_quick_run_prints_the_comparison_table(tmp_path, capsys):
    out = tmp_path / "results.md"
    rc = main(
        [
            "--dataset",
            str(SAMPLE),
            "--quick",
            "--faces",
            "2",
            "--clip",
            "4",
            "--sizes",
            "100",
            "--folds",
            "0",
            "--photos",
            "6",
            "--motion-scenes",
            "plain",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert out.read_text().strip() == text.strip()
    for row in (
        "| trainer.yml size (MB)",
        "| load with cv2 LBPHFaceRecognizer.read()",
        "| whole frame, detect + classify, face in view",
        "| classify one face, 100 training images",
    ):
        line = next(ln for ln in text.splitlines() if ln.startswith(row))
        assert "x |" in line, f"no ratio in {line!r}"
    assert f"OpenCV {cv2.__version__}" in text
    # The web page's CPU table: real daemons, one watched by a viewer that got pictures.
    assert "Web page: daemon CPU" in text
    watched = next(ln for ln in text.splitlines() if ln.startswith("| page on, 1 viewer |"))
    cells = [c.strip() for c in watched.strip("|").split("|")]
    assert float(cells[3].split()[0].split("-")[0]) > 0, watched  # the slowest viewer's rate
    assert cells[-1] in ("PASS", "OVER"), watched
    # The motion gate's table: real daemons on one generated scene, gate on and off.
    assert any(ln.startswith("| daemon CPU, empty still room, plain") for ln in text.splitlines())


def test_bench_help_names_the_soak_and_the_web_page(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "soak" in out and "web" in out
