"""Which image the evaluate stage animates, and what it reads from a corpus manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture()
def corpus(tmp_path):
    from skimage import io

    (tmp_path / "clips").mkdir()
    (tmp_path / "speakers").mkdir()
    photo = np.full((32, 32, 3), 200, np.uint8)
    io.imsave(tmp_path / "speakers" / "spk0.png", photo, check_contrast=False)
    np.savez(tmp_path / "clips" / "a.npz", blinks=np.array([[0.1, 0.3], [1.0, 1.2]]))
    rows = [
        {"clip_id": "a", "truth": "clips/a.npz", "duration_s": 4.0, "portrait": "speakers/spk0.png"},
        {"clip_id": "b", "duration_s": 2.0},  # no truth file, no portrait
        {"clip_id": "c", "duration_s": 2.0, "portrait": "speakers/missing.png"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_corpus_info_reads_blink_rates_and_portraits(corpus):
    from workflows.evaluation import corpus_info

    info = corpus_info(str(corpus))
    assert info["a"]["blink_rate"] == pytest.approx(0.5)
    assert info["a"]["portrait"] == str((corpus / "speakers" / "spk0.png").resolve())
    assert info["b"] == {} and info["c"] == {}  # a portrait that is not there is not offered
    assert corpus_info(None) == {} and corpus_info(str(corpus / "nowhere")) == {}


def test_reference_image_prefers_the_photo_unless_told_otherwise(corpus):
    from workflows.evaluation import EvaluateConfig, corpus_info, reference_image

    info = corpus_info(str(corpus))
    frame, landmarks = np.zeros((32, 32, 3), np.uint8), np.ones((478, 3), np.float32)
    kind, image, lm = reference_image(EvaluateConfig(), "a", info["a"], frame, landmarks)
    assert kind == "portrait" and image[0, 0].tolist() == [200, 200, 200] and lm is None
    kind, image, lm = reference_image(EvaluateConfig(reference="first_frame"), "a", info["a"], frame,
                                      landmarks)
    assert kind == "first_frame" and image is frame and lm is landmarks
    kind, image, _ = reference_image(EvaluateConfig(), "b", info["b"], frame, landmarks)
    assert kind == "first_frame" and image is frame  # auto falls back without a photo
    with pytest.raises(ValueError, match="b: reference=portrait.*names no portrait"):
        reference_image(EvaluateConfig(reference="portrait"), "b", info["b"], frame, landmarks)
