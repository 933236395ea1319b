"""prompt_tuning_jax: parameter-efficient tuning of frozen T5 and BERT in JAX/Flax."""
import setuptools

setuptools.setup(
    name="prompt_tuning_jax",
    version="0.1.0",
    description="Prompt tuning, FL-tuning, GPC, PASTA and the unified-view PEFT family for T5 and BERT in JAX.",
    # gin/ sits at the top level (design card) and installs as prompt_tuning_jax.gin.
    packages=setuptools.find_packages(include=["prompt_tuning_jax", "prompt_tuning_jax.*", "tasks", "tasks.*"])
    + ["prompt_tuning_jax.gin"],
    package_dir={"prompt_tuning_jax.gin": "gin"},
    package_data={"prompt_tuning_jax.gin": ["*.gin", "*/*.gin"]},
    python_requires=">=3.10,<3.13",
    # Versions known to work together (installed and tested 2026-11).
    install_requires=[
        "jax>=0.10.2,<0.11",
        "jaxlib>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "seqio==0.0.20",
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10,<4.10",
        "gin-config>=0.5.0,<0.6",
        "sentencepiece>=0.2.3,<0.3",
        "safetensors>=0.8.0,<0.9",
        "msgpack>=1.2,<2",
        "tensorstore>=0.1.86,<0.2",
        "numpy>=2.4,<2.5",
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.11,<3.12",
    ],
    extras_require={
        "test": [
            "pytest>=9.2,<10",
            "pytest-xdist>=3.8,<4",
            "torch==2.13.0",
            "transformers==5.23.0",
            "peft==0.21.2",
            "nbclient>=0.11,<0.12",
            "nbformat>=5.11,<6",
            "ipykernel>=7.4,<8",
        ],
    },
)
