"""``monai-lgg report``: HTML and Markdown reports of an evaluation output, training-curve merging, bad input."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from monai_lgg.cli import main
from monai_lgg.report import load_evaluation, read_training_curves

from .test_predict import fail, tiny_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def _image(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_html_report_is_self_contained(tiny, tmp_path):
    out = tmp_path / "report.html"
    main(["report", str(tiny["eval"]), "--output", str(out)])
    text = out.read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert len(images) == 4, "bar chart, box plot, training curves, overlay grid"
    for data in images:
        assert _image(base64.b64decode(data)).shape[1] >= 500  # readable width
    for row in load_evaluation(tiny["eval"]).rows:
        assert row["case"] in text
    assert "<h2>Metrics</h2>" in text and "95% CI" in text and "src='http" not in text


def test_markdown_report(tiny, tmp_path, capsys):
    out = tmp_path / "md"
    main(["report", str(tiny["eval"]), "--output", str(out), "--format", "md"])
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "best_worst_overlays.png",
        "dice_per_patient.png",
        "report.md",
        "score_boxplot.png",
        "training_curves.png",
    ]
    markdown = (out / "report.md").read_text()
    for png in out.glob("*.png"):
        assert f"({png.name})" in markdown
    assert "exists (pass --overwrite" in fail(
        capsys, "report", str(tiny["eval"]), "--output", str(out), "--format", "md"
    )
    main(["report", str(tiny["eval"]), "--output", str(out), "--format", "md", "--overwrite"])


def test_training_curves_merge_runs(tmp_path):
    """A resumed run writes a second event file: steps logged twice keep the later value."""
    for values in ([0.9, 0.8], [0.7, 0.6, 0.5]):
        writer = SummaryWriter(str(tmp_path))
        for step, value in enumerate(values, start=1):
            writer.add_scalar("train_loss", value, step)
        writer.close()
    assert read_training_curves(tmp_path)["train_loss"] == [
        (1, pytest.approx(0.7)),
        (2, pytest.approx(0.6)),
        (3, pytest.approx(0.5)),
    ]


def test_bad_evaluation_folder(tmp_path, capsys):
    assert "no per_patient.csv" in fail(capsys, "report", str(tmp_path))
    assert "format must be" in fail(capsys, "report", str(tmp_path), "--format", "pdf")
    assert not list(tmp_path.iterdir())
