"""Faces in ordinary photos: group photos, real identities, and a clear answer when none is usable."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.transform import rescale

from disenttalk.face import topology
from disenttalk.face.detect import MIN_FACE_PX, find_faces
from disenttalk.face.portrait import NoUsableFace, prepare_portrait
from disenttalk.face.tracker import FaceTracker
from tests import photos


def _inside_box(landmarks: np.ndarray, box, slack: float = 0.35) -> bool:
    """Whether the landmarks' centre lies in the box (widened by ``slack`` of its side)."""
    x, y, w, h = box
    cx, cy = landmarks[:, :2].mean(0)
    return x - slack * w <= cx <= x + (1 + slack) * w and y - slack * h <= cy <= y + (1 + slack) * h


def test_group_photo_animates_the_largest_face_and_says_which():
    image = photos.load("group5")
    with FaceTracker(static=True) as tracker:  # what generate did before: FaceMesh on the whole photo
        assert tracker.track_image(image) is None
    portrait = prepare_portrait(image)
    assert len(portrait.faces) == 5 and all(f.usable for f in portrait.faces)
    areas = [f.box[2] * f.box[3] for f in portrait.faces]
    assert portrait.index == int(np.argmax(areas))
    assert [f.box[0] for f in portrait.faces] == sorted(f.box[0] for f in portrait.faces)  # left → right
    answer = portrait.to_dict()
    assert answer["face"] == portrait.index and len(answer["faces"]) == 5
    assert answer["box"] == [int(round(v)) for v in portrait.box]
    assert portrait.crop.shape == (256, 256, 3) and portrait.landmarks.shape == (478, 3)
    # the crop's landmarks sit where the chosen face is in the photo
    in_photo = portrait.transform.invert(portrait.landmarks[None])[0]
    assert _inside_box(in_photo, portrait.box, slack=0.1)
    # another face on request: a different crop, of that face
    other = prepare_portrait(image, face_index=(portrait.index + 1) % 5)
    assert other.box != portrait.box
    assert _inside_box(other.transform.invert(other.landmarks[None])[0], other.box, slack=0.1)


def test_small_faces_side_by_side():
    image = photos.load("group3")
    portrait = prepare_portrait(image)
    assert len(portrait.faces) == 3 and all(f.usable for f in portrait.faces)
    assert portrait.index == 1  # the middle man's face is the largest (109 px)
    for face in portrait.faces:
        assert face.width < 120 and _inside_box(face.landmarks, face.box, slack=0.1)
    # the pasted-back frame is the photo itself when nothing moves
    pasted = portrait.paste(image, portrait.crop[None])[0]
    assert pasted.shape == image.shape and np.abs(pasted.astype(float) - image).mean() < 2.0


@pytest.mark.parametrize("name", photos.IDENTITIES)
def test_each_real_identity_is_found(name):
    image = photos.load(name)
    portrait = prepare_portrait(image)
    assert [f.usable for f in portrait.faces] == [True]
    assert _inside_box(portrait.faces[0].landmarks, portrait.box, slack=0.1)
    lm = portrait.landmarks
    # the crop frames the face as preprocessing does: landmarks fill about 1 / (1 + 2·0.3) of it
    extent = (lm[:, :2].max(0) - lm[:, :2].min(0)).max()
    assert 0.5 * 256 < extent < 0.75 * 256


def test_no_face_is_a_clear_error():
    with pytest.raises(NoUsableFace, match="no face found") as err:
        prepare_portrait(data.coffee())
    assert err.value.reason == "no_face"


@pytest.mark.parametrize(("turns", "words"), [(2, "upside down"), (1, "90° anticlockwise"),
                                              (3, "90° clockwise")])
def test_turned_photo_is_named_as_such(astronaut, turns, words):
    turned = np.ascontiguousarray(np.rot90(astronaut, turns))
    with pytest.raises(NoUsableFace, match=words) as err:
        prepare_portrait(turned)
    assert err.value.reason == "rotated"


def test_upside_down_real_photo():
    image = np.ascontiguousarray(photos.load("grace_hopper")[::-1, ::-1])
    with pytest.raises(NoUsableFace, match="upside down"):
        prepare_portrait(image)


def test_a_painted_face_is_not_called_upside_down():
    # the short-range detector scores this crop highest turned over, but FaceMesh finds no face
    # in it either way up: the photo is not the problem
    with pytest.raises(NoUsableFace, match="landmarks were not found") as err:
        prepare_portrait(photos.load("scream"))
    assert err.value.reason == "no_landmarks" and err.value.faces[0].turns == 0


def test_too_small_and_cut_off_faces_say_so(astronaut):
    small = (rescale(astronaut, 0.3, channel_axis=2) * 255).astype(np.uint8)
    small = np.pad(small, ((100, 100), (100, 100), (0, 0)), mode="edge")
    with pytest.raises(NoUsableFace, match=f"too small.*{MIN_FACE_PX} px") as err:
        prepare_portrait(small)
    assert err.value.reason == "too_small" and err.value.faces[0].width < MIN_FACE_PX
    with pytest.raises(NoUsableFace, match="its mouth is outside the photo.*cut off at the image border") as err:
        prepare_portrait(np.ascontiguousarray(astronaut[:140]))  # the mouth and chin are outside
    assert err.value.reason == "cut_off" and err.value.faces[0].outside == ("mouth",)


def test_a_tight_crop_is_animated_when_eyes_mouth_and_chin_are_in_the_picture(astronaut):
    image = photos.load("bieber_tight")  # a fifth of the face box (forehead) lies above the photo
    portrait = prepare_portrait(image)
    face = portrait.faces[0]
    assert face.usable and face.box[1] < 0
    chin = face.landmarks[topology.CHIN, 1]
    assert chin <= image.shape[0] and portrait.crop.shape == (256, 256, 3)
    # a face cut through the eyes at the side is still refused, by its landmarks
    with pytest.raises(NoUsableFace, match="one of its eyes is outside the photo"):
        prepare_portrait(np.ascontiguousarray(astronaut[:, 200:]))


def test_face_index_out_of_range(astronaut):
    with pytest.raises(NoUsableFace, match="has 1 face") as err:
        prepare_portrait(astronaut, face_index=3)
    assert err.value.reason == "bad_index"


def test_find_faces_lists_one_face_for_a_portrait(astronaut):
    faces = find_faces(astronaut)
    assert len(faces) == 1 and faces[0].usable and abs(faces[0].roll) < 20
    assert faces[0].to_dict()["usable"] is True


def test_generate_portrait_keeps_its_contract(astronaut):
    from workflows.generate import GenerateError, portrait_of

    portrait = portrait_of(astronaut)
    assert portrait.crop.shape == (256, 256, 3) and portrait.landmarks.shape == (478, 3)
    assert portrait.transform.size == 256
    with pytest.raises(GenerateError, match="no face found"):
        portrait_of(data.coffee())


def test_generate_cuts_the_portrait_with_the_bundles_framing(astronaut):
    from workflows.generate import portrait_of

    default = portrait_of(astronaut)
    wide = portrait_of(astronaut, framing={"crop_size": 128, "crop_margin": 0.6})
    assert default.crop.shape == (256, 256, 3) and wide.crop.shape == (128, 128, 3)

    def face_share(p):  # landmark extent over the crop side
        return np.ptp(p.landmarks[:, 0]) / p.crop.shape[0]

    # box side = face extent × (1 + 2·margin): 1.6 by default, 2.2 with margin 0.6
    assert face_share(default) / face_share(wide) == pytest.approx(2.2 / 1.6, rel=0.05)


def test_demo_speakers_from_a_group_photo():
    """``demo-data --portrait`` on a photo whose faces FaceMesh alone misses: the largest face."""
    from disenttalk.synth.clips import prepare_identities
    from disenttalk.synth.speakers import make_speakers

    photos.load("group5")  # skips when the package is missing
    ids = prepare_identities(make_speakers(2, seed=0), str(photos.photo_path("group5")))
    for identity in ids.values():
        assert identity.portrait.shape == (256, 256, 3) and identity.landmarks.shape == (478, 3)


def test_a_large_face_is_drawn_on_the_photos_own_pixels(astronaut):
    from skimage.color import rgb2gray
    from skimage.filters import laplace

    from disenttalk.face.editors import open_mouth
    from disenttalk.face.portrait import SHARP_MAX_PX
    from disenttalk.render.renderer import WarpRenderer

    assert prepare_portrait(astronaut).sharp_crop(astronaut) is None  # a 176 px box: 256 is enough
    photo = (rescale(astronaut, 3, channel_axis=2, order=3) * 255).clip(0, 255).astype(np.uint8)
    portrait = prepare_portrait(photo)  # the face box is ~515 px a side
    sharp = portrait.sharp_crop(photo)
    side = int(portrait.transform.sides[0])
    assert side == portrait.transform.sides[0] and side <= SHARP_MAX_PX
    assert sharp.shape == (side, side, 3)
    # the box starts on a pixel: the sharp crop is the photo's pixels copied, not resampled
    x0, y0 = (int(v) for v in portrait.transform.centres[0] - side / 2)
    inside = photo[max(y0, 0):y0 + side, max(x0, 0):x0 + side]
    np.testing.assert_array_equal(sharp[max(-y0, 0):max(-y0, 0) + inside.shape[0],
                                        max(-x0, 0):max(-x0, 0) + inside.shape[1]], inside)
    assert portrait.sharp_crop(photo, max_size=400).shape == (400, 400, 3)
    x, y, w, h = (int(v) for v in portrait.box)

    def detail(image: np.ndarray) -> float:
        return float(laplace(rgb2gray(image[y:y + h, x:x + w])).var())

    kept = {}
    scale = side / portrait.crop.shape[0]
    for crop, lm in ((portrait.crop, portrait.landmarks), (sharp, portrait.landmarks * scale)):
        still = WarpRenderer(crop, lm).render(lm)  # nothing moves: the photo should come back
        kept[crop.shape[0]] = detail(portrait.paste(photo, still[None])[0]) / detail(photo)
        # pasting only what moved: a still frame is the photo itself
        np.testing.assert_array_equal(portrait.paste(photo, still[None], still=crop)[0], photo)
    assert kept[side] > 0.7 and kept[side] > 1.5 * kept[256], kept
    # a talking mouth: only the pixels around the moving mouth and jaw differ from the photo
    renderer = WarpRenderer(sharp, portrait.landmarks * scale)
    talking = renderer.render(open_mouth(portrait.landmarks * scale, 0.2))
    pasted = portrait.paste(photo, talking[None], still=sharp)[0]
    changed = (pasted != photo).any(-1)
    eyes = int(portrait.landmarks[:, 1].min() / portrait.crop.shape[0] * side) + y0
    assert changed.any() and not changed[:eyes].any()
    assert detail(pasted) / detail(photo) > 0.85
