"""The ``augment`` section of ``configs/train.yaml``: each transform's probability and ranges."""

from __future__ import annotations

from pydantic import Field, model_validator

from disenttalk.augment.channel import Codec
from disenttalk.augment.noise import NoiseKind
from disenttalk.config import StrictConfig


class _Ranged(StrictConfig):
    @model_validator(mode="after")
    def _ranges(self):
        for name, value in self:
            if isinstance(value, tuple) and len(value) == 2 and all(
                    isinstance(v, (int, float)) for v in value) and value[0] > value[1]:
                raise ValueError(f"{name}: low {value[0]} above high {value[1]}")
        return self


class TempoAugment(_Ranged):
    """Tempo change without pitch change; the truth is stretched to match."""

    prob: float = Field(0.3, ge=0, le=1)
    factor: tuple[float, float] = (0.9, 1.1)  # > 1 faster (shorter)

    @model_validator(mode="after")
    def _positive(self) -> TempoAugment:
        if self.factor[0] <= 0:
            raise ValueError("factor must be positive")
        return self


class PitchAugment(_Ranged):
    """Pitch shift with the length kept (a deeper or higher voice saying the same)."""

    prob: float = Field(0.3, ge=0, le=1)
    semitones: tuple[float, float] = (-6.0, 6.0)


class ReverbAugment(_Ranged):
    """Convolution with a synthetic room impulse response."""

    prob: float = Field(0.3, ge=0, le=1)
    rt60_s: tuple[float, float] = (0.2, 0.8)
    drr_db: tuple[float, float] = (0.0, 10.0)  # direct-to-reverberant energy ratio

    @model_validator(mode="after")
    def _positive(self) -> ReverbAugment:
        if self.rt60_s[0] <= 0:
            raise ValueError("rt60_s must be positive")
        return self


class NoiseAugment(_Ranged):
    """Additive noise at an SNR over the speech's active part."""

    prob: float = Field(0.5, ge=0, le=1)
    snr_db: tuple[float, float] = (5.0, 30.0)
    kinds: tuple[NoiseKind, ...] = ("white", "pink", "brown", "babble", "music")


class GainAugment(_Ranged):
    """Level change, hard-clipped at full scale."""

    prob: float = Field(0.5, ge=0, le=1)
    db: tuple[float, float] = (-24.0, 12.0)  # quiet microphones are common, over-loud ones clip


class TelephoneAugment(_Ranged):
    """8 kHz narrow-band channel."""

    prob: float = Field(0.1, ge=0, le=1)
    band_hz: tuple[float, float] = (300.0, 3400.0)


class CodecAugment(_Ranged):
    """Lossy codec round trip at a low bitrate."""

    prob: float = Field(0.3, ge=0, le=1)
    codecs: tuple[Codec, ...] = ("mp3", "aac", "opus")
    bitrate_kbps: tuple[float, float] = (16.0, 32.0)


class AugmentConfig(StrictConfig):
    """Training-time audio augmentation (the ``augment`` section of ``configs/train.yaml``)."""

    enabled: bool = True
    copies: int = Field(2, ge=0)  # augmented variants made per training clip
    keep_prob: float = Field(0.5, ge=0, le=1)  # share of windows that use the original audio
    tempo: TempoAugment = TempoAugment()
    pitch: PitchAugment = PitchAugment()
    reverb: ReverbAugment = ReverbAugment()
    noise: NoiseAugment = NoiseAugment()
    gain: GainAugment = GainAugment()
    telephone: TelephoneAugment = TelephoneAugment()
    codec: CodecAugment = CodecAugment()

    @property
    def active(self) -> bool:
        """Whether training makes variants at all."""
        return self.enabled and self.copies > 0 and self.keep_prob < 1
