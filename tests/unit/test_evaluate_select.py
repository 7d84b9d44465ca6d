"""Which clips the evaluate stage scores: a capped split still covers every language."""

from __future__ import annotations

from workflows.evaluate import EvaluateConfig, select_clips


def test_cap_is_shared_across_languages():
    index = [{"clip_id": f"{lang}_{i}", "split": "test", "language": lang}
             for lang in ("en", "zh") for i in range(5)]
    index += [{"clip_id": "es_0", "split": "test_xling", "language": "es"}]
    cfg = EvaluateConfig.from_dict({"max_clips_per_split": 4, "splits": ["test", "test_xling"],
                                    "per_language": ["test"]})
    groups = select_clips(index, cfg)
    assert [r["clip_id"] for r in groups["test"]] == ["en_0", "en_1", "zh_0", "zh_1"]
    assert [r["clip_id"] for r in groups["test/zh"]] == ["zh_0", "zh_1"]
    assert [r["clip_id"] for r in groups["test_xling"]] == ["es_0"]


def test_each_clip_samples_with_its_own_seed():
    from workflows.evaluate import clip_seed

    seeds = {clip_seed(0, f"en_test_{i:03d}") for i in range(50)}
    assert len(seeds) == 50  # clips scored together share neither noise nor blink timing
    assert clip_seed(0, "en_test_001") == clip_seed(0, "en_test_001")  # reproducible
    assert clip_seed(1, "en_test_001") == clip_seed(0, "en_test_001") + 1
