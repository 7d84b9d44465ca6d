"""Evaluation metrics: lip sync, mouth shape, blinks, sharpness, fidelity, temporal change.

Pure numpy / torch / scikit-image: the ``evaluate`` workflow runs these per clip on Ray.
"""
