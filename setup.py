"""JLML person re-identification on TensorFlow 2 / Keras 3.

CPU machines (and CI) install `tensorflow-cpu`. GPU users install the CUDA build instead:
`pip install "tensorflow[and-cuda]==2.21.*"` and then `pip install --no-deps -e .`.
"""
import os

from setuptools import find_packages, setup

# `tensorflow-cpu` by default; JLML_TF_PACKAGE=tensorflow selects the full (GPU-capable) wheel.
TF_PACKAGE = os.environ.get("JLML_TF_PACKAGE", "tensorflow-cpu")

setup(
    name="jlml-tf",
    version="0.1.0",
    description="JLML (Li, Zhu, Gong, IJCAI 2017) person re-identification in TensorFlow 2 / Keras 3",
    python_requires=">=3.10",
    # `datasets/` is installed as `jlml_tf_datasets` so it never shadows the `datasets` library.
    packages=find_packages(include=["jlml_tf", "jlml_tf.*"]) + ["jlml_tf_datasets"],
    package_dir={"jlml_tf_datasets": "datasets"},
    install_requires=[
        f"{TF_PACKAGE}>=2.21,<2.22",
        "keras>=3.12,<4",
        "tensorboard>=2.20",
        "tensorflow-datasets>=4.9.9",
        "importlib_resources>=6",  # needed by TFDS builders inside a package, undeclared by TFDS
        "absl-py>=2.1",
        "numpy>=1.26",
        "h5py>=3.11",
        "scipy>=1.13",
        "matplotlib>=3.8",
        "pillow>=10",
        "tqdm>=4.60",  # embed progress bar
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5"],  # pytest.ini runs the suite on 2 workers
        # tensorflow-serving-api pins the full `tensorflow` wheel: install it with --no-deps.
        "serving": ["grpcio>=1.60"],
        "lite": ["ai-edge-litert>=2.0"],
    },
)
