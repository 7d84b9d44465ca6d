"""Demo-corpus planning: split sizes, no speaker/sentence leakage, test_xling, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.synth.corpus import (
    SPLITS,
    XLING_SPLIT,
    partition,
    phoneme_table,
    plan_corpus,
    save_npz,
    summarize,
)
from disenttalk.synth.sentences import SENTENCES


@pytest.mark.parametrize(
    ("count", "expected"), [(20, [12, 4, 4]), (10, [6, 2, 2]), (3, [1, 1, 1]), (2, [1, 1, 0]), (1, [1, 0, 0])]
)
def test_partition_sizes(count, expected):
    sizes = partition(count, (0.6, 0.2, 0.2))
    assert sizes == expected and sum(sizes) == count


def test_sentence_lists_are_long_and_distinct():
    for language in ("en", "zh", "es"):
        assert len(SENTENCES[language]) >= 40
        assert len(set(SENTENCES[language])) == len(SENTENCES[language])


def test_large_bank_adds_sentences_and_leaves_the_default_plan_alone():
    from disenttalk.synth.sentences import MORE_SENTENCES, sentences

    for language, more in MORE_SENTENCES.items():
        bank = sentences(language, "large")
        assert bank[:len(SENTENCES[language])] == SENTENCES[language] and len(set(bank)) == len(bank)
        assert len(more) >= 40
    assert sentences("es", "large") == SENTENCES["es"]  # no second list: the first alone
    with pytest.raises(ValueError, match="sentence bank"):
        sentences("en", "huge")
    default = plan_corpus(["en", "zh"], 90, seed=0, num_speakers=12)[1]
    assert plan_corpus(["en", "zh"], 90, seed=0, num_speakers=12, sentence_bank="default")[1] == default
    large = plan_corpus(["en", "zh"], 90, seed=0, num_speakers=12, sentence_bank="large")[1]

    def train_sentences(plans):
        return {s for p in plans if p.split == "train" for s in p.sentences}

    assert len(train_sentences(large)) > 1.8 * len(train_sentences(default))
    held_out = {s for p in large if p.split != "train" for s in p.sentences}
    assert not held_out & train_sentences(large)


@pytest.fixture(scope="module")
def plan():
    return plan_corpus(["en", "zh"], 20, seed=3)


def test_every_split_present_with_expected_counts(plan):
    _, plans = plan
    for language in ("en", "zh"):
        counts = {s: sum(p.language == language and p.split == s for p in plans) for s in SPLITS}
        assert counts == {"train": 12, "val": 4, "test": 4}
    assert sum(p.split == XLING_SPLIT for p in plans) == 10
    assert len({p.clip_id for p in plans}) == len(plans)


def test_no_speaker_or_sentence_leaks_out_of_train(plan):
    _, plans = plan
    by_split = {s: [p for p in plans if p.split == s] for s in (*SPLITS, XLING_SPLIT)}
    train_speakers = {p.speaker_id for p in by_split["train"]}
    train_sentences = {s for p in by_split["train"] for s in p.sentences}
    for split in ("val", "test", XLING_SPLIT):
        assert not {p.speaker_id for p in by_split[split]} & train_speakers
        assert not {s for p in by_split[split] for s in p.sentences} & train_sentences
    assert not {p.speaker_id for p in by_split["val"]} & {p.speaker_id for p in by_split["test"]}
    # Within train, clips do not repeat sentences when the pool is large enough.
    assert len(train_sentences) == 2 * len(by_split["train"])


def test_xling_language_is_unused_elsewhere(plan):
    _, plans = plan
    xling = {p.language for p in plans if p.split == XLING_SPLIT}
    assert xling == {"es"}
    assert all(p.language in ("en", "zh") for p in plans if p.split != XLING_SPLIT)
    with pytest.raises(ValueError):
        plan_corpus(["en", "es"], 5, seed=0, xling_language="es")


def test_same_seed_same_plan_other_seed_other_plan(plan):
    speakers, plans = plan
    again_speakers, again = plan_corpus(["en", "zh"], 20, seed=3)
    assert again == plans and again_speakers == speakers
    _, other = plan_corpus(["en", "zh"], 20, seed=4)
    assert [p.sentences for p in other] != [p.sentences for p in plans]


def test_speakers_differ(plan):
    speakers, _ = plan
    assert len({(s.rate_wpm, s.pitch) for s in speakers}) == len(speakers)
    assert len({s.speaker_id for s in speakers}) == len(speakers)


def test_npz_writer_is_byte_stable(tmp_path):
    arrays = {"landmarks": np.arange(24, dtype=np.float32).reshape(2, 4, 3),
              "phonemes": phoneme_table([(0.1, 0.2, "ˈɑː"), (0.2, 0.3, "tɕh")])}
    save_npz(tmp_path / "a.npz", **arrays)
    save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = np.load(tmp_path / "a.npz")  # no pickle needed
    assert loaded["phonemes"]["symbol"].tolist() == ["ˈɑː", "tɕh"]
    np.testing.assert_array_equal(loaded["landmarks"], arrays["landmarks"])


def test_summary_counts_clips_and_hours():
    rows = [{"split": "train", "language": "en", "duration_s": 3600.0, "speaker": "a"},
            {"split": "test", "language": "zh", "duration_s": 1800.0, "speaker": "b"}]
    s = summarize(rows)
    assert s["clips"] == 2 and s["hours"] == pytest.approx(1.5) and s["speakers"] == 2
    assert s["splits"]["test"]["zh"] == {"clips": 1, "hours": pytest.approx(0.5)}


ALL_ENGINES = ("espeak", "festival", "flite", "piper")


def test_held_out_voices_are_heard_only_in_test_voice():
    from disenttalk.synth.corpus import HELD_OUT_VOICES, VOICE_SPLIT

    _, plans = plan_corpus(["en", "zh"], 30, seed=0, voice_clips=10, engines=ALL_ENGINES)
    held = [p for p in plans if p.split == VOICE_SPLIT]
    others = [p for p in plans if p.split != VOICE_SPLIT]
    assert len(held) == 10 and {p.voice for p in held} == set(HELD_OUT_VOICES)
    heard = {p.voice for p in others}
    assert not heard & set(HELD_OUT_VOICES)
    # whole engines no other clip uses
    assert not {v.split("/")[0] for v in heard} & {"flite", "piper"}
    # the test split's faces and English sentences, nothing from train
    test = [p for p in plans if p.split == "test"]
    assert {p.speaker_id for p in held} <= {p.speaker_id for p in test}
    train_sentences = {s for p in plans if p.split == "train" for s in p.sentences}
    assert all(p.language == "en" for p in held)
    assert not {s for p in held for s in p.sentences} & train_sentences
    # training hears several engines and voices in each language
    train = [p for p in plans if p.split == "train"]
    assert {p.voice.split("/")[0] for p in train if p.language == "en"} == {"espeak", "festival"}
    assert len({p.voice for p in train if p.language == "zh"}) >= 3


def test_espeak_alone_falls_back_to_held_out_variants():
    from disenttalk.synth.corpus import FALLBACK_HELD_OUT, VOICE_SPLIT, voice_notes

    _, plans = plan_corpus(["en", "zh"], 20, seed=0, voice_clips=3, engines=("espeak",))
    assert all(p.voice.startswith("espeak/") for p in plans)
    held = {p.voice for p in plans if p.split == VOICE_SPLIT}
    assert held == set(FALLBACK_HELD_OUT)
    assert not held & {p.voice for p in plans if p.split != VOICE_SPLIT}
    notes = voice_notes(("espeak",))
    assert any("festival/" in n and "flite/" in n and "piper/" in n for n in notes)
    assert any("falls back" in n for n in notes)
    assert voice_notes(ALL_ENGINES) == []


def test_unknown_engine_and_missing_language_are_refused():
    with pytest.raises(ValueError, match="unknown speech engine"):
        plan_corpus(["en"], 10, seed=0, engines=("espeak", "sam"))
    with pytest.raises(ValueError, match="test_voice"):
        plan_corpus(["zh"], 10, seed=0, xling_language=None, voice_clips=2, engines=("espeak",))


def test_training_engines_narrow_train_val_test_and_keep_test_voice():
    from disenttalk.synth.corpus import VOICE_SPLIT

    _, full = plan_corpus(["en", "zh"], 30, seed=0, voice_clips=5, engines=ALL_ENGINES)
    _, narrow = plan_corpus(["en", "zh"], 30, seed=0, voice_clips=5, engines=ALL_ENGINES,
                            training_engines=("espeak",))
    assert all(p.voice.startswith("espeak/") for p in narrow if p.split != VOICE_SPLIT)
    assert [p for p in narrow if p.split == VOICE_SPLIT] == [p for p in full if p.split == VOICE_SPLIT]
