"""Packaging for audience_activation: PySpark + Delta Lake audience and profile activation."""
from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="audience-activation",
    version="0.1.0",
    description=(
        "Identity resolution, profile merging, PQL segment evaluation and per-destination "
        "edge/hub activation outputs on PySpark and Delta Lake."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"audience_activation": ["pql/*.lark", "py.typed"]},
    install_requires=[
        # Pinned together: delta-spark 4.4.0 is the Delta release built for Spark 4.2 (its jars,
        # io.delta:delta-spark_4.2_2.13:4.4.0, are pinned in jars/pom.xml; 4.4.1 has no Spark 4.2 build on
        # Maven Central), and it requires pyspark <= 4.2.0. deltalake (delta-rs) is the engine without jars.
        "pyspark==4.2.0",
        "delta-spark==4.4.0",
        "deltalake==1.6.6",
        "pyarrow>=16",
        "pandas>=2.0,<3",  # pyspark 4.2 does not fully support pandas 3
        "pydantic>=2.6,<3",
        "pyyaml>=6.0,<7",
        "lark>=1.1,<2",
        "typer>=0.12,<1",
        "rich>=13,<16",
    ],
    extras_require={
        "dev": [
            "pytest>=8,<10",
            "pytest-xdist>=3.6,<4",  # `make test` runs the suite in two processes (TEST_WORKERS)
            "chispa>=0.10,<1",
            "hypothesis>=6.100,<7",
            "nbclient>=0.10,<1",
            "nbformat>=5.9,<6",
            "ipykernel>=6.29",
            "matplotlib>=3.8",
            "ruff>=0.5",
            "mypy>=1.10",
            "psutil>=5.9",  # benchmarks: peak memory of the driver and the Spark JVM
        ],
        # `make notebook`: JupyterLab on notebooks/ with the project's kernel.
        "notebook": [
            "jupyterlab>=4.2,<5",
            "ipykernel>=6.29",
            "matplotlib>=3.8",
        ],
    },
    entry_points={"console_scripts": ["audience-activation=audience_activation.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Database",
    ],
)
