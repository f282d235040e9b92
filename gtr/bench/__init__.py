"""gtr-bench: times backends and plans side by side (runner, timing, report; the official sampler to compare)."""
