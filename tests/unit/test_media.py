"""Video/audio I/O: round trips through H.264/AAC MP4 and WAV, resampling, clean errors."""

from __future__ import annotations

import av
import numpy as np
import pytest
from skimage.transform import resize

from disenttalk import media
from disenttalk.media import MediaError, Video, read_audio, read_video, write_audio, write_video


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def still_frames(astronaut) -> np.ndarray:
    """50 copies of the astronaut at 256² (2 s at 25 fps)."""
    img = (resize(astronaut, (256, 256), anti_aliasing=True) * 255).astype(np.uint8)
    return np.repeat(img[None], 50, axis=0)


def _dominant_freq(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("source_rate", [16_000, 44_100])
def test_video_round_trip_resamples_audio(tmp_path, still_frames, source_rate):
    path = tmp_path / "clip.mp4"
    write_video(path, still_frames, fps=25, audio=_tone(2.0, source_rate), sample_rate=source_rate)
    video = read_video(path)
    assert isinstance(video, Video)
    assert video.frames.shape == (50, 256, 256, 3) and video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(25.0)
    assert video.duration == pytest.approx(2.0)
    # Lossy H.264, but the picture is the same picture.
    assert np.abs(video.frames.astype(np.int16) - still_frames).mean() < 6.0
    # AAC pads the last frame, so a few hundred extra samples are expected.
    assert video.audio is not None and video.audio.dtype == np.float32
    assert 31_500 <= len(video.audio) <= 33_000
    assert _dominant_freq(video.audio, 16_000) == pytest.approx(440.0, abs=3.0)
    assert no_temp_files_left(tmp_path)


def no_temp_files_left(folder) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["clip.mp4"]


def test_stereo_44k_source_is_downmixed(tmp_path, still_frames):
    """A file written by another tool with 44.1 kHz stereo AAC comes back 16 kHz mono."""
    path = tmp_path / "stereo.mp4"
    tone = _tone(2.0, 44_100)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 256, 256, "yuv420p"
        aus = out.add_stream("aac", rate=44_100, layout="stereo")
        for image in still_frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(vs.encode(None))
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 44_100, 0
        out.mux(aus.encode(frame))
        out.mux(aus.encode(None))
    video = read_video(path)
    assert len(video.frames) == 50
    assert video.audio is not None and video.audio.ndim == 1
    assert 31_500 <= len(video.audio) <= 33_000
    assert _dominant_freq(video.audio, 16_000) == pytest.approx(440.0, abs=3.0)


def test_video_without_audio_and_odd_size(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(5, 63, 81, 3), dtype=np.uint8)
    path = tmp_path / "odd.mp4"
    write_video(path, frames, fps=30)
    video = read_video(path)
    assert video.audio is None
    assert video.frames.shape == (5, 64, 82, 3)  # padded to even sizes for yuv420p
    assert video.fps == pytest.approx(30.0)


def test_a_single_threaded_writer_encodes_the_same_frames(tmp_path, still_frames):
    """threads=1 (a server encoding beside its own rendering) is x264 on one thread: the same
    video as its own threading, frame for frame within the codec's loss."""
    frames = np.stack([np.roll(f, 3 * i, axis=1) for i, f in enumerate(still_frames[:20])])
    videos = []
    for name, threads in (("auto.mp4", None), ("one.mp4", 1)):
        with media.VideoWriter(tmp_path / name, 25, preset="veryfast", threads=threads) as writer:
            writer.write(frames[:7])
            writer.write(frames[7:])
        videos.append(read_video(tmp_path / name).frames)
    assert videos[0].shape == videos[1].shape == frames.shape
    errors = [float(np.abs(video.astype(int) - frames).mean()) for video in videos]
    assert max(errors) < 6.0 and abs(errors[0] - errors[1]) < 0.5, errors


def test_wav_round_trip_and_read_audio_from_video(tmp_path, still_frames):
    wav = tmp_path / "tone.wav"
    write_audio(wav, _tone(1.0, 44_100), sample_rate=44_100)
    audio = read_audio(wav)
    assert audio.dtype == np.float32 and len(audio) == pytest.approx(16_000, abs=2)
    assert _dominant_freq(audio, 16_000) == pytest.approx(440.0, abs=3.0)
    mp4 = tmp_path / "clip.mp4"
    write_video(mp4, still_frames[:25], fps=25, audio=_tone(1.0, 16_000))
    assert len(read_audio(mp4)) == pytest.approx(16_000, abs=1100)


def test_bad_files_raise_media_error(tmp_path, still_frames):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video " * 200)
    good = tmp_path / "good.mp4"
    write_video(good, still_frames[:10], fps=25)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:2000])
    wav = tmp_path / "only_audio.wav"
    write_audio(wav, _tone(0.5, 16_000))
    cases = {empty: "empty", junk: "not a readable", truncated: "not a readable",
             wav: "no video stream", tmp_path / "missing.mp4": "no such file"}
    for path, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as info:
            read_video(path)
        assert path.name in str(info.value)
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(good)


def test_read_image_converts_to_rgb_uint8_and_names_bad_files(tmp_path):
    from skimage import io

    from disenttalk.media import read_image

    grey = tmp_path / "grey.png"
    io.imsave(grey, np.arange(64, dtype=np.uint8).reshape(8, 8), check_contrast=False)
    rgba = tmp_path / "rgba.png"
    io.imsave(rgba, np.full((4, 5, 4), 7, np.uint8), check_contrast=False)
    image = read_image(grey)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8 and (image[..., 0] == image[..., 2]).all()
    assert read_image(rgba).shape == (4, 5, 3)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    for path, reason in {junk: "not a readable image", tmp_path / "missing.png": "no such file"}.items():
        with pytest.raises(MediaError, match=reason) as info:
            read_image(path)
        assert path.name in str(info.value)


def test_read_image_turns_a_phone_photo_upright(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90° clockwise to view) comes back upright."""
    from PIL import Image

    from disenttalk.media import read_image

    upright = np.zeros((40, 30, 3), np.uint8)
    upright[:10] = 255  # a white band along the top
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (40, 30, 3)
    assert image[:10].mean() > 200 and image[15:].mean() < 50


@pytest.mark.parametrize("source_fps", [30.0, 30000 / 1001, 50.0, 25.0])
def test_read_video_resamples_to_the_models_frame_rate(tmp_path, source_fps):
    n = int(round(2.0 * source_fps))  # two seconds; frame i is grey level 4·i (mod 256)
    frames = np.zeros((n, 32, 32, 3), np.uint8)
    for i in range(n):
        frames[i] = (4 * i) % 256
    path = tmp_path / "clip.mp4"
    media.write_video(path, frames, source_fps)
    video = media.read_video(path, with_audio=False, fps=25.0)
    assert video.fps == 25.0 and len(video.frames) == 50
    # output frame k shows the source frame on screen at k / 25 s
    expected = (4 * np.floor(np.arange(50) * source_fps / 25 + 1e-6)) % 256
    np.testing.assert_allclose(video.frames[:, 16, 16, 0], expected, atol=6)
    assert media.read_video(path, with_audio=False).fps == pytest.approx(source_fps, rel=1e-3)


def test_read_video_comes_upright_from_rotation_metadata(tmp_path):
    from tests.clips import mark_rotated

    frames = np.zeros((5, 32, 64, 3), np.uint8)
    frames[:, :, :32] = 255  # white left half, landscape 64×32
    path = tmp_path / "phone.mp4"
    media.write_video(path, frames, 25.0)
    mark_rotated(path)  # a phone's display matrix (rotate 90°) in the track header
    upright = media.read_video(path, with_audio=False).frames
    assert upright.shape == (5, 64, 32, 3)  # portrait: rotated as players show it
    assert upright[0, :28, :, 0].mean() > 200 and upright[0, 36:, :, 0].mean() < 50  # white on top


def test_streams_read_a_video_in_chunks_the_same_as_whole(tmp_path, still_frames):
    frames = still_frames.copy()
    frames[:, :8] = np.arange(50, dtype=np.uint8)[:, None, None, None] * 5  # frame number in a band
    sound = _tone(2.0, 44_100)
    path = tmp_path / "clip.mp4"
    media.write_video(path, frames, 30.0, audio=sound, sample_rate=44_100)
    whole = media.read_video(path, fps=25.0)
    stream = media.FrameStream(path, fps=25.0)
    parts = list(stream.chunks(7))
    assert [a for a, _ in parts] == list(range(0, len(stream), 7)) and stream.fps == 25.0
    np.testing.assert_array_equal(np.concatenate([f for _, f in parts]), whole.frames)
    with media.AudioStream(path) as audio:  # 44.1 kHz → 16 kHz mono, read in any pieces
        pieces = [audio.read(n) for n in (1000, 0, 5555, 100_000)]
    np.testing.assert_allclose(np.concatenate(pieces), whole.audio)
    samples, level = media.audio_level(path)
    assert samples == len(whole.audio) and level == pytest.approx(np.sqrt(np.mean(whole.audio**2)), rel=1e-4)
    silent = tmp_path / "silent.mp4"
    media.write_video(silent, frames, 25.0)
    with pytest.raises(media.NoAudioStream, match="no audio stream"):
        media.audio_level(silent)
