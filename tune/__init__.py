"""Ray Tune searches over DisentTalk's settings (``sampler``: DDIM η and guidance of a bundle)."""
