from setuptools import find_packages, setup


def read_version():
    with open("vbench/__init__.py") as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in vbench/__init__.py")


setup(
    name="vbench",
    version=read_version(),
    description="Video-model training benchmark (time to accuracy) and SlowFast-style trainer",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vbench", "vbench.*"]),
    install_requires=[
        "torch>=2.11",  # the oldest tested (INSTALL.md); >= 2.6 for weights_only loading (SECURITY.md)
        "torchvision>=0.26",
        "fvcore",  # CfgNode (configs), precise BN, FLOP counts
        "av>=17",  # streams.best() (13), reformat(threads=) (17); tested with 18.1
        "psutil",
        "tqdm",
        "matplotlib",
        "numpy",
        "PyYAML",
    ],
    extras_require={
        "test": ["pytest", "tensorboard", "ruff"],
        "bench": ["pytorchvideo"],
        "codec": ["torchcodec"],
        "mllog": ["mlperf-logging"],  # vbench export --mllog
        "gpu": ["nvidia-ml-py"],  # NVML: GPU power, clocks, throttling and energy in results.json
    },
    entry_points={"console_scripts": ["vbench=vbench.cli:main"]},
)
