"""Audio augmentation for training: seeded transforms of a mono waveform.

Lip motion should follow what is said, not who says it or how it was recorded. Each transform
is a small pure function of (audio, sample rate, parameters, ``np.random.Generator``):

- ``add_noise``: white, pink (1/f), brown (1/f²) or babble (the clip's own time-reversed and
  shifted copies) at an SNR measured over the speech's active part, not its silences;
- ``reverberate``: a synthetic room impulse response (exponentially decaying noise for a drawn
  RT60, the direct path at lag 0, so the speech is not delayed);
- ``telephone``: 8 kHz and back with a 300–3400 Hz band-pass (zero-phase, no delay);
- ``codec``: MP3 (libmp3lame), AAC or Opus (libopus, at 48 kHz) at a low bitrate through PyAV,
  in memory; the containers (MP3 with its LAME header, MP4, Ogg) carry the encoder delay, so the
  decoded audio lines up with the input; it is cut or padded to the input's length;
- ``apply_gain``: ± dB, then hard clipping at full scale (±1.0) as a recorder's converter does;
- ``change_tempo``: WSOLA time-stretch without pitch change; sample ``n`` of the output is the
  input's sample ``n·factor`` (centred frames: no lead or lag), length ``round(len / factor)``.

:func:`augment` applies each with its probability from an :class:`AugmentConfig` and returns the
audio, the tempo factor (to stretch the truth) and the names of what it applied. Everything is
deterministic given the generator's state (no threads inside the codecs).

Modules: :mod:`~disenttalk.augment.noise`, :mod:`~disenttalk.augment.room`,
:mod:`~disenttalk.augment.channel` (telephone, codec, gain), :mod:`~disenttalk.augment.tempo`
(tempo, pitch), :mod:`~disenttalk.augment.config` (:class:`AugmentConfig`) and
:mod:`~disenttalk.augment.chain` (:func:`augment`); every name is importable from here.
"""

from disenttalk.augment.chain import ORDER, augment
from disenttalk.augment.channel import CODECS, Codec, apply_gain, codec, telephone
from disenttalk.augment.config import (
    AugmentConfig,
    CodecAugment,
    GainAugment,
    NoiseAugment,
    PitchAugment,
    ReverbAugment,
    TelephoneAugment,
    TempoAugment,
)
from disenttalk.augment.noise import (
    NoiseKind,
    active_mask,
    add_noise,
    babble,
    coloured_noise,
    music,
    snr_db,
)
from disenttalk.augment.room import reverberate, room_impulse_response
from disenttalk.augment.tempo import change_tempo, pitch_shift

__all__ = [
    "CODECS",
    "ORDER",
    "AugmentConfig",
    "Codec",
    "CodecAugment",
    "GainAugment",
    "NoiseAugment",
    "NoiseKind",
    "PitchAugment",
    "ReverbAugment",
    "TelephoneAugment",
    "TempoAugment",
    "active_mask",
    "add_noise",
    "apply_gain",
    "augment",
    "babble",
    "change_tempo",
    "codec",
    "coloured_noise",
    "music",
    "pitch_shift",
    "reverberate",
    "room_impulse_response",
    "snr_db",
    "telephone",
]
