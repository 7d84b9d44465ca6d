"""Index sets of MediaPipe FaceMesh's 478-point topology (refined landmarks, irises 468–477).

"Left"/"right" are the subject's: the subject's right eye appears on the image's left.
Contours run corner to corner so upper/lower pairs line up index by index.
"""

from __future__ import annotations

NUM_LANDMARKS = 478

# Lips: outer and inner contours, each from the subject's right corner (61/78) to the left (291/308).
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291)
INNER_LIP_MID = (13, 14)  # upper / lower inner-lip midpoints

# Eyes: upper and lower lids, outer corner → inner corner for the right eye, inner → outer for the left.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
LEFT_EYE_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)

# The six points of the usual eye aspect ratio (Soukupová & Čech): corners p1/p4, upper p2/p3, lower p6/p5.
RIGHT_EYE_EAR = (33, 160, 158, 133, 153, 144)
LEFT_EYE_EAR = (362, 385, 387, 263, 373, 380)

RIGHT_IRIS = (468, 469, 470, 471, 472)  # centre first
LEFT_IRIS = (473, 474, 475, 476, 477)

RIGHT_EYEBROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_EYEBROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)

FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)

NOSE_TIP = 1
NOSE_BOTTOM = 2
FOREHEAD = 10
CHIN = 152
RIGHT_EYE_OUTER = 33
LEFT_EYE_OUTER = 263


def unique(*groups: tuple[int, ...]) -> tuple[int, ...]:
    """Sorted union of index groups."""
    return tuple(sorted({i for g in groups for i in g}))


LIPS = unique(LIPS_OUTER_UPPER, LIPS_OUTER_LOWER, LIPS_INNER_UPPER, LIPS_INNER_LOWER)
RIGHT_EYE = unique(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
LEFT_EYE = unique(LEFT_EYE_UPPER, LEFT_EYE_LOWER)
EYES = unique(RIGHT_EYE, LEFT_EYE, RIGHT_IRIS, LEFT_IRIS)
