"""Audio frontends: frame alignment, determinism, any input rate, batching, HuBERT from a local dir."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.audio import make_frontend, resample
from disenttalk.model.config import AudioConfig


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def mel():
    return make_frontend(AudioConfig())


def test_mel_shape_and_alignment(mel):
    assert mel.feature_dim == 160
    feats = mel(_tone(1.0, 16000))
    assert feats.shape == (25, 160) and feats.dtype == np.float32
    assert mel(_tone(1.01, 16000)).shape == (26, 160)  # a partial last frame counts
    assert mel(_tone(1.0, 16000), num_frames=30).shape == (30, 160)  # padded
    assert mel(_tone(1.0, 16000), num_frames=10).shape == (10, 160)  # trimmed


def test_mel_deterministic_and_trim_consistent(mel):
    x = _tone(0.8, 16000)
    a, b = mel(x), mel(x.copy())
    assert np.array_equal(a, b)
    # trimming to fewer frames gives the same leading frames except the last one, whose
    # second 50 Hz window now reaches into the padding
    assert np.allclose(mel(x, num_frames=12)[:11], a[:11], atol=1e-5)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_mel_any_sample_rate(mel, rate):
    ref = mel(_tone(1.2, 16000))
    feats = mel(_tone(1.2, rate), sample_rate=rate)
    assert feats.shape == ref.shape == (30, 160)
    # a 440 Hz tone is well inside every band limit: same spectrum after resampling
    assert np.abs(feats[2:-2] - ref[2:-2]).mean() < 0.05


def test_mel_silence_and_speech_levels(mel):
    silence = mel(np.zeros(16000, np.float32))
    tone = mel(_tone(1.0, 16000))
    assert np.allclose(silence, silence[0, 0])  # constant floor
    assert tone.max() > silence.max() + 1.0
    # the tone's energy lands in the band around 440 Hz
    assert int(np.argmax(tone[10, :80])) in range(5, 25)


def test_mel_batched_matches_single(mel):
    x = np.stack([_tone(0.6, 16000, 300.0), _tone(0.6, 16000, 900.0)])
    out = mel(x)
    assert out.shape == (2, 15, 160)
    assert np.allclose(out[1], mel(x[1]), atol=1e-6)


def test_mel_utterance_normalisation():
    feats = make_frontend(AudioConfig(normalize="utterance"))(_tone(1.0, 16000) + 0.01 * np.cos(
        np.arange(16000, dtype=np.float32)))
    per_bin = feats.reshape(50, 80)  # back to 50 Hz frames
    assert np.allclose(per_bin.mean(0), 0.0, atol=1e-3)


def test_resample_length():
    assert resample(np.zeros(44100, np.float32), 44100, 16000).shape == (16000,)


def test_config_checks():
    with pytest.raises(ValueError):
        make_frontend(AudioConfig(hop_length=160))


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    """A random 2-layer HuBERT saved like a downloaded checkpoint (no network)."""
    import torch
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = HubertModel(cfg)
    path = tmp_path_factory.mktemp("hubert")
    model.save_pretrained(path)
    return path


def test_hubert_frontend_from_local_dir(tiny_hubert):
    front = make_frontend(AudioConfig(frontend="hubert", hubert_model=str(tiny_hubert),
                                      hubert_layer=2))
    assert front.feature_dim == 64
    x = _tone(1.0, 16000) + 0.1 * _tone(1.0, 16000, 1234.0)
    feats = front(x)
    assert feats.shape == (25, 64) and feats.dtype == np.float32
    assert np.array_equal(feats, front(x))  # deterministic (eval mode)
    assert front(_tone(1.0, 44100), sample_rate=44100).shape == (25, 64)
    batch = front(np.stack([x, x[::-1].copy()]), num_frames=20)
    assert batch.shape == (2, 20, 64)
    assert np.isfinite(batch).all()


def test_hubert_layer_out_of_range(tiny_hubert):
    with pytest.raises(ValueError):
        make_frontend(AudioConfig(frontend="hubert", hubert_model=str(tiny_hubert),
                                  hubert_layer=5))


def test_preprocess_actor_without_an_audio_frontend_fails_instead_of_storing_no_features(monkeypatch, tmp_path):
    import sys

    from workflows.preprocess.worker import ClipProcessor, PreprocessConfig

    cfg = PreprocessConfig()
    monkeypatch.setitem(sys.modules, "disenttalk.audio", None)  # the frontend module cannot load
    with pytest.raises(ImportError):
        ClipProcessor(cfg, str(tmp_path), frozenset())
    monkeypatch.delitem(sys.modules, "disenttalk.audio")
    missing = PreprocessConfig.from_dict({"audio": {"frontend": "hubert", "hubert_model": str(tmp_path / "none")}})
    with pytest.raises(OSError):  # HuBERT weights that are not there
        ClipProcessor(missing, str(tmp_path), frozenset())


@pytest.mark.parametrize("source_fps", [30.0, 25.0])
def test_preprocess_stores_clips_at_the_models_frame_rate(tmp_path, astronaut, source_fps):
    from skimage.transform import resize

    from disenttalk import media
    from workflows.preprocess.worker import ClipProcessor, PreprocessConfig

    face = (resize(astronaut[0:300, 100:400], (160, 160)) * 255).astype(np.uint8)
    n = int(round(1.6 * source_fps))
    frames = np.stack([np.roll(face, int(4 * np.sin(i / 5)), axis=0) for i in range(n)])
    t = np.arange(int(1.6 * 44100)) / 44100  # 44.1 kHz audio, resampled to 16 kHz on reading
    path = tmp_path / "clip.mp4"
    media.write_video(path, frames, source_fps, audio=(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
                      sample_rate=44100)
    processor = ClipProcessor(PreprocessConfig(), str(tmp_path / "store"), frozenset())
    [(part, record)] = processor.build({"clip_id": "c", "uri": str(path)}, path, "0" * 64)
    assert part is None  # one clip: it keeps the manifest's id
    assert record.fps == 25.0 and record.num_frames == 40  # 1.6 s at 25 fps, whatever the source
    assert record.features.shape[0] == 40 and record.sample_rate == 16000
    assert len(record.audio) == 40 * 640 and record.valid.mean() > 0.9


def test_generation_uses_the_hubert_features_preprocessing_stored(tmp_path, astronaut, tiny_hubert, monkeypatch):
    """HuBERT attends over the whole clip: offline generation feeds the denoiser the features of the
    whole audio, exactly what preprocessing stored for training, not per-window ones."""
    from skimage.transform import resize

    from disenttalk import media
    from disenttalk.bundle import Bundle
    from disenttalk.face.regions import RegionSplit
    from disenttalk.generate.generator import Generator
    from disenttalk.model.config import ModelConfig
    from disenttalk.model.denoiser import Denoiser
    from workflows.preprocess.worker import ClipProcessor, PreprocessConfig

    audio_cfg = {"frontend": "hubert", "hubert_model": str(tiny_hubert), "hubert_layer": 2}
    face = (resize(astronaut[0:300, 100:400], (160, 160)) * 255).astype(np.uint8)
    frames = np.stack([np.roll(face, int(4 * np.sin(i / 5)), axis=0) for i in range(100)])  # 4 s
    rng = np.random.default_rng(0)
    speech = (0.2 * rng.standard_normal(64000) * (0.5 + 0.5 * np.sin(np.arange(64000) / 900))).astype(np.float32)
    path = tmp_path / "clip.mp4"
    media.write_video(path, frames, 25.0, audio=speech, sample_rate=16000)
    cfg = PreprocessConfig.from_dict({"audio": audio_cfg})
    [(_, record)] = ClipProcessor(cfg, str(tmp_path / "store"), frozenset()).build(
        {"clip_id": "c", "uri": str(path)}, path, "0" * 64)

    split = RegionSplit.contiguous(10, k_lip=3, k_eye=2)
    model = ModelConfig.from_dict({"denoiser": {"dim": 16, "num_blocks": 2, "heads": 2}, "n_expression": 10,
                                   "k_lip": 3, "k_eye": 2, "audio": audio_cfg})
    state = Denoiser(model.denoiser, split, record.features.shape[1]).state_dict()
    bundle = Bundle(path=None, config=model, split=split, norm={"mean": np.zeros(10, np.float32),
                    "std": np.ones(10, np.float32)}, expert_state={}, denoiser_state=state, meta={})
    gen = Generator(bundle, window=40, prefix=8)  # several windows over the 100 frames
    seen, window = [], gen.window

    def spy(index, feats, prefix, start, settings):
        seen.append((start, feats.cpu().numpy()))
        return window(index, feats, prefix, start, settings)

    monkeypatch.setattr(gen, "window", spy)
    gen.motion(record.audio, record.sample_rate, steps=2)
    assert len(seen) > 2
    for start, feats in seen:
        np.testing.assert_allclose(feats, record.features[start:start + len(feats)], rtol=1e-5, atol=1e-5)
    # per-window features of a transformer differ from the clip's: why offline takes the whole
    part = gen.frontend(record.audio[: 40 * 640], 16000, num_frames=40)
    assert not np.allclose(part, record.features[:40], atol=1e-3)
