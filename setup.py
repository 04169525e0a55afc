"""verl-sdar: Self-Distilled Agentic Reinforcement Learning as a plugin for upstream verl."""

from setuptools import find_packages, setup

VERL_VERSION = "0.9.1"

setup(
    name="verl-sdar",
    version="0.1.0",
    description="SDAR (gated on-policy self-distillation on top of GRPO) as a plugin for verl",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["verl_sdar", "verl_sdar.*"])
    + ["hydra_plugins.verl_sdar_searchpath"],
    package_data={"verl_sdar": ["config/**/*.yaml", "config/*.yaml", "envs/*.yaml", "envs/*/*.yaml"]},
    include_package_data=True,
    install_requires=[
        # The CPU path and the trainer subclass touch a few verl internals: pinned exactly.
        f"verl=={VERL_VERSION}",
        # What verl's V1 trainer needs at run time but verl's base install lacks.
        "TransferQueue==0.1.11",
        "cachetools",
        "fastapi",
        "uvicorn",
        "ray>=2.40",
        "transformers>=4.51",
        "tokenizers",
        "omegaconf>=2.3",
        "hydra-core>=1.3",
        "pandas",
        "pyarrow",
    ],
    extras_require={
        "test": ["pytest>=8", "ruff"],
        "alfworld": ["alfworld==0.4.2"],
        # offline Search-QA: BM25 in process; the corpus is built from countryinfo's data (pinned:
        # the generated set must not change under us)
        "search": ["bm25s>=0.3,<0.4", "countryinfo==1.0.1"],
        "webshop": ["bm25s>=0.3,<0.4"],
        # plots of benchmarks/curves.py --report
        "bench": ["matplotlib>=3.8,<4"],
        # GPU only; never installed in CI. Exactly what verl 0.9.1's own `vllm` extra pins (verl's
        # vLLM server uses vLLM internals: another vLLM fails at start-up). tests/test_packaging.py
        # reads verl's installed metadata and fails when these and verl's disagree. Install torch
        # 2.11.0 (a CUDA build) with it. Untested here: no GPU in this project's CI.
        "vllm": [
            f"verl[vllm]=={VERL_VERSION}",
            "vllm==0.24.0",
            "torch==2.11.0",
            "torchvision==0.26.0",
            "torchaudio==2.11.0",
            "transformers==5.9.0",
        ],
    },
    entry_points={
        # `import verl` loads this in the driver and in every Ray worker.
        "verl.plugins": ["verl_sdar = verl_sdar.plugin"],
    },
)
