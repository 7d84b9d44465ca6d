"""Festival and Flite speech (the Debian programs), with their segment timings as IPA phones.

* **festival**: ``festival -b script.scm``; the script selects the voice (``(voice_kal_diphone)``),
  synthesises ``(Utterance Text "...")``, saves a RIFF wave and prints every Segment's name and
  end time. Rate is ``Duration_Stretch``; pitch scales the intonation model's
  ``target_f0_mean``/``target_f0_std`` where the voice has one (the diphone voices; the HTS voice
  ignores it). The diphone voices give 16 kHz, ``cmu_us_slt_arctic_hts`` 32 kHz.
* **flite**: ``flite -voice NAME -psdur -t TEXT -o out.wav`` prints ``phone:end_s …``. Rate is
  ``duration_stretch``, pitch ``int_f0_target_mean`` (checked: it moves the measured f0 of
  every voice but rms, whose f0 it barely changes). ``kal`` gives 8 kHz, the others 16 kHz.

Both print CMU/radio phone names (ARPAbet in lower case); :data:`ARPABET_IPA` maps them to IPA,
and the silences (``pau``, ``h#``, ``brth``…) give no phone, as espeak-ng's output has none. A
phone starts where the segment before it ends. Audio is resampled to 16 kHz.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from disenttalk.synth.speech import SAMPLE_RATE, Speech

TIMEOUT_S = 60.0

# CMU / festival "radio" phone set → IPA (the one home of this table).
ARPABET_IPA = {
    "aa": "ɑ", "ae": "æ", "ah": "ʌ", "ao": "ɔ", "aw": "aʊ", "ax": "ə", "axr": "ɚ", "ay": "aɪ",
    "b": "b", "ch": "tʃ", "d": "d", "dh": "ð", "dx": "ɾ", "eh": "ɛ", "el": "l̩", "em": "m̩",
    "en": "n̩", "er": "ɝ", "ey": "eɪ", "f": "f", "g": "ɡ", "hh": "h", "hv": "ɦ", "ih": "ɪ",
    "ix": "ɨ", "iy": "i", "jh": "dʒ", "k": "k", "l": "l", "m": "m", "n": "n", "nx": "ɾ̃",
    "ng": "ŋ", "ow": "oʊ", "oy": "ɔɪ", "p": "p", "q": "ʔ", "r": "ɹ", "s": "s", "sh": "ʃ",
    "t": "t", "th": "θ", "uh": "ʊ", "uw": "u", "ux": "ʉ", "v": "v", "w": "w", "y": "j",
    "z": "z", "zh": "ʒ",
}
SILENCES = {"pau", "h#", "sil", "ssil", "brth", "#", "_"}

FESTIVAL_VOICES = {  # voice → Debian package that ships it
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FLITE_F0_MEAN = {"kal": 95.0, "kal16": 95.0, "awb": 115.0, "rms": 100.0, "slt": 165.0}  # Hz, measured


def ipa(phone: str) -> str | None:
    """IPA of one CMU phone name (stress digits ignored); None for silences."""
    name = phone.strip().lower().rstrip("012")
    if name in SILENCES:
        return None
    if name not in ARPABET_IPA:
        raise ValueError(f"unknown CMU phone {phone!r}")
    return ARPABET_IPA[name]


def pitch_factor(pitch: int) -> float:
    """espeak's 0–99 pitch (50 = the voice's own) as a factor on f0: half an octave each way."""
    return float(2.0 ** ((pitch - 50) / 100.0))


def range_factor(pitch_range: int) -> float:
    """espeak's 0–99 pitch range (50 = the voice's own) as a factor on the f0 spread."""
    return max(1, pitch_range) / 50.0


def _binary(name: str, packages: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: apt-get install {packages}")
    return path


def _run(cmd: list[str], cwd: str) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{cmd[0]} did not finish in {TIMEOUT_S:.0f} s") from e
    if done.returncode != 0:
        said = (done.stderr.strip() + "\n" + done.stdout.strip()).strip()[-500:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {said}")
    return done.stdout


def _speech(wav: Path, ends: list[tuple[str, float]]) -> Speech:
    """16 kHz Speech from a wave file and (phone, end_s) segments."""
    if not wav.exists():
        raise RuntimeError(f"the synthesiser wrote no audio ({wav.name})")
    rate, samples = wavfile.read(wav)
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    scale = 32768.0 if samples.dtype == np.int16 else 1.0
    audio = samples.astype(np.float32) / scale
    if rate != SAMPLE_RATE:
        g = np.gcd(SAMPLE_RATE, rate)
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    duration = len(audio) / SAMPLE_RATE
    phones, words, t, gap = [], [], 0.0, True
    for name, end in ends:
        symbol = ipa(name)
        end = min(end, duration)
        if symbol is None:
            gap = True
        elif end > t:
            phones.append((t, end, symbol))
            if gap:
                words.append(t)  # no word events from these engines: each stretch after a pause
            gap = False
        t = max(t, end)
    return Speech(audio=audio, phonemes=tuple(phones), words=tuple(words))


def scheme_string(text: str) -> str:
    """``text`` as a Scheme string literal: backslashes and quotes escaped, controls as spaces."""
    clean = "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in text)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(engine: str, voice: str, known: list[str], rate: float) -> None:
    if voice not in known:
        raise ValueError(f"unknown {engine} voice {voice!r}; known: {known}")
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")


def speak_festival(
    text: str, voice: str = "kal_diphone", rate: float = 1.0, pitch: int = 50, pitch_range: int = 50
) -> Speech:
    """Speak English ``text`` with a festival voice (see FESTIVAL_VOICES); ``rate`` > 1 is faster."""
    _check("festival", voice, sorted(FESTIVAL_VOICES), rate)
    binary = _binary("festival", f"festival {FESTIVAL_VOICES[voice]}")
    with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
        wav = Path(tmp) / "out.wav"
        script = f"""
(voice_{voice})
(Parameter.set 'Duration_Stretch {1.0 / rate:.6f})
(if (and (boundp 'int_lr_params) (assoc 'target_f0_mean int_lr_params))
  (set! int_lr_params
    (cons (list 'target_f0_mean (* {pitch_factor(pitch):.6f} (cadr (assoc 'target_f0_mean int_lr_params))))
      (cons (list 'target_f0_std (* {range_factor(pitch_range):.6f} (cadr (assoc 'target_f0_std int_lr_params))))
        int_lr_params))))
(set! utt (Utterance Text {scheme_string(text)}))
(utt.synth utt)
(utt.save.wave utt {scheme_string(str(wav))} 'riff)
(mapcar (lambda (s) (format t "SEG %s %f\\n" (item.name s) (item.feat s 'end)))
        (utt.relation.items utt 'Segment))
"""
        (Path(tmp) / "script.scm").write_text(script)
        out = _run([binary, "-b", "script.scm"], tmp)
        ends = [(m.group(1), float(m.group(2)))
                for m in re.finditer(r"^SEG (\S+) ([-0-9.eE]+)$", out, re.M)]
        if not ends:
            raise RuntimeError(f"festival gave no segments for voice {voice!r}: {out.strip()[-300:]}")
        return _speech(wav, ends)


def speak_flite(
    text: str, voice: str = "kal16", rate: float = 1.0, pitch: int = 50, pitch_range: int = 50
) -> Speech:
    """Speak English ``text`` with a flite voice (see FLITE_VOICES); ``pitch_range`` is ignored."""
    _check("flite", voice, list(FLITE_VOICES), rate)
    binary = _binary("flite", "flite")
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        cmd = [binary, "-voice", voice, "--setf", f"duration_stretch={1.0 / rate:.6f}"]
        if pitch != 50:
            cmd += ["--setf", f"int_f0_target_mean={FLITE_F0_MEAN[voice] * pitch_factor(pitch):.2f}"]
        # The text goes as one argument (no shell); a leading "-" cannot be read as an option
        # because -t takes the next argument whatever it is.
        cmd += ["-psdur", "-t", text, "-o", "out.wav"]
        out = _run(cmd, tmp)
        ends = [(m.group(1), float(m.group(2))) for m in re.finditer(r"(\S+):([0-9.]+)", out)]
        if not ends:
            raise RuntimeError(f"flite printed no phone durations: {out.strip()[-300:]}")
        return _speech(Path(tmp) / "out.wav", ends)
