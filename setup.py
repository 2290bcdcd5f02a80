"""cml_tf: Collaborative Metric Learning with efficient negative sampling (TensorFlow 2 / Keras 3)."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _requirements():
    with open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


setup(
    name="cml_tf",
    version="0.1.0",
    description="Collaborative Metric Learning with 2-stage negative sampling, TensorFlow 2 / Keras 3",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["cml_tf", "cml_tf.*"]),
    install_requires=_requirements(),
    extras_require={
        "dev": [
            "pytest>=7",
            "ruff>=0.4",
            "nbclient>=0.9",
            "nbformat>=5.9",
            "ipykernel>=6",
            "matplotlib>=3.7",
            "implicit>=0.7",  # the Table 2 runner's ALS / BPR baselines, exercised by tests/test_experiments.py
            "faiss-cpu>=1.7",  # approximate retrieval (the ann extra); its tests skip without it
        ],
        "notebooks": ["jupyter", "nbclient>=0.9", "nbformat>=5.9", "ipykernel>=6", "matplotlib>=3.7"],
        "baselines": ["implicit>=0.7"],
        "ann": ["faiss-cpu>=1.7"],  # python -m cml_tf.recommend --index=hnsw|ivf
    },
    entry_points={
        "console_scripts": [
            "cml-tf-train=cml_tf.train:run",
            "cml-tf-stats=cml_tf.stats:run",
            "cml-tf-recommend=cml_tf.recommend:run",
            "cml-tf-export=cml_tf.export:run",
        ]
    },
    license="Apache-2.0",
)
