"""The demo corpus: espeak-ng speech, visemes, blinks and head sway rendered onto portraits, with truth."""
