"""mar-tiny: a small real MAR model trained on scikit-learn's handwritten digits.

`gtr.tiny.data` loads the digits as 32x32 RGB images in [-1, 1] and defines the
deterministic train / held-out split used by training and by `gtr-eval`.
"""
