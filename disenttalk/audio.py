"""Audio frontends: waveform → features aligned to 25 fps video frames.

Both frontends produce 50 Hz feature frames (20 ms hop) and stack two of them per video frame,
so frame j of the output covers audio from 40j ms to 40j + 40 ms and F = 2 × feature dim.
``mel`` is a log-mel spectrogram (no weights, the offline default); ``hubert`` takes a hidden
layer of a ``transformers`` HuBERT model (the paper's features). Input at any sample rate is
resampled to the configured rate; the output is deterministic.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from fractions import Fraction

import numpy as np
import torch
from scipy.signal import resample_poly

from disenttalk.constants import SAMPLE_RATE
from disenttalk.model.config import AudioConfig

FEATURE_RATE = 50  # Hz, the 20 ms hop of both frontends
LOG_FLOOR = 1e-5  # power floor before log10; silence maps to log10(1e-5) = -5


def resample(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (float32)."""
    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate == target_rate:
        return audio
    ratio = Fraction(target_rate, sample_rate)
    return resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


class AudioFrontend(ABC):
    """Callable: audio [S] or [B,S] at ``sample_rate`` → features [T,F] or [B,T,F] at ``cfg.fps``.

    ``local``: a frame's features depend only on audio near it (a spectrogram), so features of a
    slice equal those of the whole clip away from the slice's borders; a transformer (HuBERT)
    attends over everything it is given, so they do not.
    """

    local = True

    def __init__(self, cfg: AudioConfig, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        if cfg.hop_length * FEATURE_RATE != cfg.sample_rate or FEATURE_RATE % cfg.fps:
            raise ValueError("hop_length must be sample_rate / 50 (a 20 ms hop); fps must divide 50")
        self.cfg = cfg
        self.stack = FEATURE_RATE // cfg.fps  # 50 Hz frames per video frame (2 at 25 fps)
        self.samples_per_frame = cfg.sample_rate // cfg.fps  # 640 at 16 kHz / 25 fps

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """F, features per video frame."""

    @abstractmethod
    def _features(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T·samples_per_frame] → 50 Hz features [B, stack·T, F/stack]."""

    def num_frames(self, num_samples: int, sample_rate: int) -> int:
        """Video frames that cover ``num_samples`` of audio (the last partial frame counts)."""
        return math.ceil(num_samples * self.cfg.fps / sample_rate - 1e-9)

    def __call__(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
                 num_frames: int | None = None) -> np.ndarray:
        """Features aligned to video frames, float32 [T,F] (or [B,T,F] for batched input)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim not in (1, 2):
            raise ValueError(f"audio must be [S] or [B,S], got shape {audio.shape}")
        batched = audio.ndim == 2
        if num_frames is None:
            num_frames = self.num_frames(audio.shape[-1], sample_rate)
        audio = resample(audio.reshape(-1, audio.shape[-1]), sample_rate, self.cfg.sample_rate)
        # pad with silence / trim so the audio spans exactly num_frames video frames
        length = num_frames * self.samples_per_frame
        audio = np.pad(audio[:, :length], ((0, 0), (0, max(0, length - audio.shape[1]))))
        with torch.no_grad():
            feats = self._features(torch.from_numpy(audio).to(self.device))  # [B, stack·T, F/stack]
        feats = feats[:, : self.stack * num_frames]
        out = feats.reshape(feats.shape[0], num_frames, -1).cpu().numpy().astype(np.float32)
        return out if batched else out[0]


class MelFrontend(AudioFrontend):
    """Log-mel spectrogram: 25 ms Hann window, 20 ms hop, ``n_mels`` Slaney mel bands."""

    def __init__(self, cfg: AudioConfig, device: str | torch.device = "cpu"):
        super().__init__(cfg, device)
        from transformers.audio_utils import mel_filter_bank

        bank = mel_filter_bank(
            num_frequency_bins=cfg.n_fft // 2 + 1, num_mel_filters=cfg.n_mels, min_frequency=0.0,
            max_frequency=cfg.sample_rate / 2, sampling_rate=cfg.sample_rate, norm="slaney",
            mel_scale="slaney",
        )
        self.bank = torch.from_numpy(bank.astype(np.float32)).to(self.device)  # [n_fft/2+1, n_mels]
        self.window = torch.hann_window(cfg.win_length, device=self.device)

    @property
    def feature_dim(self) -> int:
        return self.stack * self.cfg.n_mels

    def _features(self, audio: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        # centred frames: 50 Hz frame i is centred at i·hop, so the first two lie in video frame 0
        spec = torch.stft(audio, cfg.n_fft, cfg.hop_length, cfg.win_length, self.window,
                          center=True, pad_mode="constant", return_complex=True)
        power = spec.abs().pow(2).transpose(1, 2)  # [B, frames, n_fft/2+1]
        logmel = torch.log10((power @ self.bank).clamp(min=LOG_FLOOR))  # [B, frames, n_mels]
        logmel = logmel[:, : audio.shape[1] // cfg.hop_length]  # drop the frame centred past the end
        if cfg.normalize == "utterance":
            mean, std = logmel.mean(1, keepdim=True), logmel.std(1, keepdim=True)
            return (logmel - mean) / (std + 1e-5)
        # fixed affine map to roughly [-0.25, 1.5]: silence → -0.25, speech ≈ 0.5–1.5
        return (logmel + 4.0) / 4.0


class HubertFrontend(AudioFrontend):
    """Hidden states of layer ``hubert_layer`` of a ``transformers`` HuBERT model (50 Hz)."""

    local = False

    def __init__(self, cfg: AudioConfig, device: str | torch.device = "cpu"):
        super().__init__(cfg, device)
        from transformers import HubertModel, Wav2Vec2FeatureExtractor

        if cfg.sample_rate != SAMPLE_RATE:
            raise ValueError("HuBERT expects 16 kHz input; set audio.sample_rate=16000")
        local_only = not cfg.allow_download
        self.model = HubertModel.from_pretrained(cfg.hubert_model, local_files_only=local_only)
        self.model.eval().to(self.device)
        try:  # the checkpoint's own input normalisation, if it ships a preprocessor config
            extractor = Wav2Vec2FeatureExtractor.from_pretrained(
                cfg.hubert_model, local_files_only=local_only)
            self.do_normalize = bool(extractor.do_normalize)
        except OSError:
            self.do_normalize = True  # zero-mean, unit-variance waveform per utterance
        layers = self.model.config.num_hidden_layers + 1
        if not -layers <= cfg.hubert_layer < layers:
            raise ValueError(f"hubert_layer {cfg.hubert_layer} outside the model's {layers} states")

    @property
    def feature_dim(self) -> int:
        return self.stack * self.model.config.hidden_size

    def _features(self, audio: torch.Tensor) -> torch.Tensor:
        if self.do_normalize:
            audio = (audio - audio.mean(-1, keepdim=True)) / (audio.std(-1, keepdim=True) + 1e-7)
        # HuBERT's CNN yields floor((S - 400) / 320) + 1 frames at 16 kHz; pad half a receptive
        # field on each side so frame i is centred at i·hop, like the mel frontend
        wanted = audio.shape[1] // self.cfg.hop_length
        pad = self.cfg.win_length // 2
        audio = torch.nn.functional.pad(audio, (pad, pad))
        states = self.model(audio, output_hidden_states=True).hidden_states[self.cfg.hubert_layer]
        missing = wanted - states.shape[1]
        if missing > 0:  # repeat the last frame rather than invent features
            states = torch.cat([states, states[:, -1:].expand(-1, missing, -1)], dim=1)
        return states[:, :wanted]


def make_frontend(cfg: AudioConfig, device: str | torch.device = "cpu") -> AudioFrontend:
    """The frontend named by ``cfg.frontend``, computing on ``device`` (features come back as
    numpy on the host either way)."""
    if cfg.frontend == "mel":
        return MelFrontend(cfg, device)
    return HubertFrontend(cfg, device)


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) → CUDA when a GPU is visible, else CPU; any other torch device name as is."""
    if spec is None or str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: no CUDA device is visible here")
    return device
