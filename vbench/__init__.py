"""vbench: a video-model training benchmark and SlowFast-style trainer."""
__version__ = "0.1.0"
