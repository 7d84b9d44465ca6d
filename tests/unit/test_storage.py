"""Storage URIs (local and s3:// on a moto server), the clip record format, stage config loading."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from disenttalk.config import ConfigError
from workflows.common import format_summary, load_config
from workflows.platform import clipstore, storage
from workflows.platform.tracking import MlflowConfig, config_params, tracking_uri


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    """A moto S3 server on a free loopback port with a bucket ``unit``."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch_module.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch_module.setenv(key, "testing")
    monkeypatch_module.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage.ensure_bucket("s3://unit")
    yield "s3://unit"
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_uri_helpers():
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/x")
    assert storage.join("s3://b/data", "clips", "a.npz") == "s3://b/data/clips/a.npz"
    assert storage.resolve("clips/a.mp4", "s3://b/corpus") == "s3://b/corpus/clips/a.mp4"
    assert storage.resolve("/abs/a.mp4", "s3://b/corpus") == "/abs/a.mp4"
    assert storage.resolve("s3://c/a.mp4", "/local") == "s3://c/a.mp4"
    assert storage.parent("s3://b/corpus/manifest.jsonl") == "s3://b/corpus"


def _round_trip(root: str, tmp_path) -> None:
    storage.write_bytes(storage.join(root, "a/b/x.bin"), b"\x00\x01")
    storage.write_text(storage.join(root, "a/y.txt"), "hé")
    assert storage.read_bytes(storage.join(root, "a/b/x.bin")) == b"\x00\x01"
    assert storage.read_text(storage.join(root, "a/y.txt")) == "hé"
    assert storage.exists(storage.join(root, "a/y.txt"))
    assert not storage.exists(storage.join(root, "a/none.txt"))
    assert storage.list_files(root) == [storage.join(root, "a/b/x.bin"), storage.join(root, "a/y.txt")]
    assert storage.list_files(root, ".txt") == [storage.join(root, "a/y.txt")]
    local = storage.download_dir(root, tmp_path / "down")
    assert (local / "a/b/x.bin").read_bytes() == b"\x00\x01"
    copy = storage.join(root, "copy")
    storage.upload_dir(local, copy)
    assert storage.read_text(storage.join(copy, "a/y.txt")) == "hé"
    with storage.local_copy(storage.join(root, "a/y.txt")) as path:
        assert path.read_text() == "hé"
    storage.delete(storage.join(root, "a/y.txt"))
    assert not storage.exists(storage.join(root, "a/y.txt"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "missing.bin"))


def test_local_round_trip(tmp_path):
    _round_trip(str(tmp_path / "store"), tmp_path)
    assert not [p for p in (tmp_path / "store").rglob("*.tmp")]  # no temp files left behind


def test_s3_round_trip(s3, tmp_path):
    _round_trip(f"{s3}/rt", tmp_path)


def test_folders_packed_for_tasks_on_other_nodes(s3, tmp_path):
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "meta.json").write_text("{}")
    (folder / "sub" / "w.pt").write_bytes(b"\x00\x01" * 1000)
    packed = storage.pack_dir(folder)
    assert packed == {"meta.json": b"{}", "sub/w.pt": b"\x00\x01" * 1000}
    storage.upload_dir(folder, f"{s3}/bundle")
    assert storage.pack_dir(f"{s3}/bundle/") == packed  # the same from S3
    first = storage.unpack_dir(packed)
    assert first != folder and (first / "sub" / "w.pt").read_bytes() == b"\x00\x01" * 1000
    assert storage.unpack_dir(packed) == first  # once per machine
    assert not list(first.parent.glob(".staging-*"))
    assert storage.unpack_dir({**packed, "meta.json": b"{ }"}) != first  # other contents, other folder
    with pytest.raises(FileNotFoundError, match="no files under"):
        storage.pack_dir(tmp_path / "empty")


def _record() -> clipstore.ClipRecord:
    rng = np.random.default_rng(0)
    return clipstore.ClipRecord(
        clip_id="c1", speaker="s", language="zh", split="val", fps=25.0,
        landmarks=rng.normal(size=(4, 478, 3)).astype(np.float32), valid=np.array([1, 1, 0, 1], bool),
        audio=rng.normal(size=2560).astype(np.float32), sample_rate=16000,
        features=rng.normal(size=(4, 8)).astype(np.float32), source_uri="s3://b/c1.mp4",
        content_hash="ab" * 32, sentence="你好", extra={"crop": np.eye(3)},
    )  # fmt: skip


def test_clip_record_round_trip_and_tables(s3):
    rec = _record()
    name = clipstore.write_record(s3, rec)
    back = clipstore.read_record(s3, name)
    assert (back.clip_id, back.sentence, back.split, back.sample_rate) == ("c1", "你好", "val", 16000)
    np.testing.assert_array_equal(back.landmarks, rec.landmarks)
    np.testing.assert_array_equal(back.valid, rec.valid)
    np.testing.assert_array_equal(back.extra["crop"], np.eye(3))
    row = rec.index_row(name)
    assert row["valid_fraction"] == 0.75 and row["feature_dim"] == 8 and row["duration_s"] == 0.16
    clipstore.write_table(storage.join(s3, clipstore.INDEX), [row], clipstore.INDEX_SCHEMA)
    assert clipstore.read_index(s3) == [row] and clipstore.read_index(s3, "train") == []
    assert clipstore.read_rejects(storage.join(s3, "nowhere")) == []


def test_load_config_yaml_overrides_and_strictness(tmp_path):
    from workflows.fit import FitConfig

    cfg = load_config(FitConfig, "fit", None, ["k_lip=10", "mlflow.experiment=x"])
    assert (cfg.k_lip, cfg.k_eye, cfg.mlflow.experiment) == (10, 8, "x")
    assert config_params(cfg)["mlflow.enabled"] == "True"
    with pytest.raises(ConfigError):
        load_config(FitConfig, "fit", None, ["k_lips=10"])  # unknown key
    with pytest.raises(ConfigError):
        load_config(FitConfig, "fit", None, ["k_lip=many"])  # wrong type
    with pytest.raises(ConfigError):
        load_config(FitConfig, "fit", None, ["k_lip=60"])  # k_lip + k_eye > N
    yaml_file = tmp_path / "fit.yaml"
    yaml_file.write_text("n_expression: 32\nk_eye: 4\n")
    assert load_config(FitConfig, "fit", yaml_file).n_expression == 32


def test_shipped_stage_configs_validate():
    from workflows.fit import FitConfig
    from workflows.preprocess.worker import PreprocessConfig

    pre = load_config(PreprocessConfig, "preprocess")
    assert pre.face.crop_size == 256 and pre.actors.max_size >= pre.actors.min_size
    assert load_config(FitConfig, "fit").n_expression == 64


def test_tracking_uri_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DISENTTALK_HOME", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert MlflowConfig().enabled and os.environ["MLFLOW_TRACKING_URI"].startswith("http")


def test_format_summary_is_aligned():
    text = format_summary("x", {"ok": 2, "hours": 0.5, "by": {"silent": 1}})
    assert text.splitlines() == ["== x ==", "  ok     2", "  hours  0.500", "  by:", "    silent  1"]


def test_metric_names_mlflow_refuses_are_logged_with_underscores(tmp_path, monkeypatch):
    import mlflow

    from workflows.platform.tracking import metric_name, start_run

    assert metric_name("test_voice/espeak/en-us+klatt/lmd") == "test_voice/espeak/en-us_klatt/lmd"
    assert metric_name("test/en/gap_closed") == "test/en/gap_closed"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with start_run(MlflowConfig(experiment="names")) as tracker:
        tracker.log_metrics({"test/espeak/en-us+klatt/lmd": 0.5, "val/lmd": 0.25})
        run_id = tracker.run_id
    logged = mlflow.get_run(run_id).data.metrics
    assert logged == {"test/espeak/en-us_klatt/lmd": 0.5, "val/lmd": 0.25}


def test_absolute_leaves_s3_alone_and_anchors_local_paths(tmp_path, monkeypatch):
    from workflows.platform.storage import absolute

    monkeypatch.chdir(tmp_path)
    assert absolute("s3://bucket/store") == "s3://bucket/store"
    assert absolute("workspace/store") == str(tmp_path / "workspace" / "store")
    assert absolute(tmp_path / "x") == str(tmp_path / "x")


def test_demo_data_writes_a_corpus_to_an_s3_prefix(s3, tmp_path):
    """``demo-data --out s3://…`` builds the corpus in a temporary folder and uploads it; nothing
    is written to a local folder named ``s3:``."""
    from typer.testing import CliRunner

    from workflows.cli import app

    result = CliRunner().invoke(app, ["demo-data", "--out", f"{s3}/corpus", "--clips-per-language", "3",
                                      "--languages", "en", "--xling-language", "", "--voice-clips", "0",
                                      "--engines", "espeak", "--speakers", "3", "--workers", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in storage.read_text(f"{s3}/corpus/manifest.jsonl").splitlines()]
    assert len(rows) == 3
    for row in rows:  # clips are addressed relative to the manifest, so the corpus can move
        assert storage.exists(storage.resolve(row["path"], f"{s3}/corpus")), row
    assert not (Path.cwd() / "s3:").exists()


@pytest.mark.parametrize("command", [["fit", "--data", "x", "--out", "y", "--config", "s3://b/fit.yaml"],
                                     ["inspect", "clip.mp4", "--json", "s3://b/report.json"]])
def test_options_that_take_local_paths_refuse_uris_with_a_message(command):
    from typer.testing import CliRunner

    from workflows.cli import app

    result = CliRunner().invoke(app, command)
    assert result.exit_code in (1, 2)
    assert "takes a local path" in result.output and "s3:/" in result.output


def test_generate_reads_and_writes_s3_through_local_files(s3, tmp_path):
    from workflows.common import UserError
    from workflows.generate import local_files

    storage.write_bytes(f"{s3}/gen/speech.wav", b"RIFF-speech")
    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"jpeg")
    inputs = {"audio": f"{s3}/gen/speech.wav", "image": str(photo), "pose-from": None}
    with local_files(inputs, f"{s3}/gen/out/talk.mp4") as (files, written):
        assert Path(files["audio"]).read_bytes() == b"RIFF-speech"  # a local copy of the object
        assert files["image"] == str(photo) and files["pose-from"] is None
        assert not storage.exists(f"{s3}/gen/out/talk.mp4")  # nothing there until the video is complete
        Path(written).write_bytes(b"mp4-bytes")
    assert storage.read_bytes(f"{s3}/gen/out/talk.mp4") == b"mp4-bytes"
    assert not Path(files["audio"]).exists() and not Path(written).exists()  # temporary copies gone

    with pytest.raises(RuntimeError), local_files(inputs, f"{s3}/gen/failed.mp4") as (_, written):
        Path(written).write_bytes(b"half")
        raise RuntimeError("render failed")
    assert not storage.exists(f"{s3}/gen/failed.mp4"), "a failed run uploads nothing"

    with pytest.raises(UserError, match="--image takes a local path"), \
            local_files({"image": "https://example.com/face.jpg"}, str(tmp_path / "o.mp4")):
        pass


def test_upload_keeps_the_folder_a_manifest_reads_and_resumes(s3, tmp_path):
    from disenttalk import media
    from workflows import manifest
    from workflows.common import UserError
    from workflows.upload import upload

    videos = tmp_path / "videos"
    for speaker in ("alice", "bob", "carol"):
        path = videos / "en" / speaker / "talk 1.mp4"
        path.parent.mkdir(parents=True)
        sound = (0.2 * np.sin(np.arange(16000) / 5)).astype(np.float32)
        media.write_video(path, np.full((25, 32, 32, 3), 90, np.uint8), 25.0, audio=sound, sample_rate=16000)
    assert upload(videos, f"{s3}/videos") == {"uploaded": 3, "skipped": 0,
                                               "bytes": sum(p.stat().st_size for p in videos.rglob("*.mp4"))}
    local_rows, _ = manifest.build(str(videos))
    s3_rows, skipped = manifest.build(f"{s3}/videos")
    assert not skipped
    key = lambda rows: sorted((r["clip_id"], r["speaker"], r["language"], r["split"]) for r in rows)  # noqa: E731
    assert key(s3_rows) == key(local_rows)  # speakers, languages and splits read the same from S3
    assert all(r["path"].startswith(f"{s3}/videos/en/") for r in s3_rows)
    assert upload(videos, f"{s3}/videos")["skipped"] == 3  # a second run copies nothing again
    with pytest.raises(UserError, match="not an s3:// URI"):
        upload(videos, str(tmp_path / "copy"))
    with pytest.raises(UserError, match="run again to resume"):
        upload(videos, "s3://no-such-bucket/videos")
