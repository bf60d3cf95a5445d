"""Packaging of the taxifare sample trainer.

TensorFlow is not listed: the training environment provides it (as AI Platform's runtime
versions do). ``cloudml-hypertune`` is optional; the trainer works without it.
"""

from setuptools import find_packages, setup

setup(
    name="taxifare-trainer",
    version="0.1.0",
    description="Sample mlengine / AI Platform trainer: New York taxi fare regression in Keras.",
    packages=find_packages(include=["trainer", "trainer.*"]),
    install_requires=[],
    extras_require={"hypertune": ["cloudml-hypertune"]},
    python_requires=">=3.10",
)
