"""The `extras` marker: tests that need something `pip install -e ".[test]"` does not install
(PyTorchVideo, torchcodec, the ffmpeg command-line tool; tests/README.md). Without it they skip
and say what is missing; `python -m pytest -q -m extras tests` runs just them."""


def pytest_configure(config):
    config.addinivalue_line("markers", "extras: needs an optional package or tool (pytorchvideo, torchcodec, "
                                       "ffmpeg); skips naming it when absent")
