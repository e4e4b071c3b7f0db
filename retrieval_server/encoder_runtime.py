"""Inference runtimes for a sentence-transformers model's transformer: ONNX Runtime and OpenVINO.

sentence-transformers has `backend="onnx" | "openvino"` itself, but both go through `optimum`, whose releases
pin transformers below the 5.x that vLLM needs in the same environment (optimum-onnx 0.1: transformers < 4.58;
optimum-intel 2.2: < 5.6), and optimum's exporter fails to import against transformers 5.19. So the export
here is torch's own ONNX exporter on the model's transformer alone; the tokenizer and the pooling and
normalisation modules stay sentence-transformers' (`RuntimeEncoder` in encoder.py runs them around it).

Precisions (measured on the 2-core box, all-MiniLM-L6-v2, `benchmarks/retrieval_encoders.py`):
- ONNX Runtime `int8`: dynamic quantization of the MatMul weights, per channel (ONNX Runtime's quantizer).
  Quantizing every op per tensor (the quantizer's default) costs far more: cosine to fp32 down to 0.945.
- OpenVINO `bf16`: OpenVINO's inference-precision hint; it runs the matmuls in bf16 on CPUs with AMX or
  AVX512-BF16 and in fp32 elsewhere (the effective precision is what the manifest records).

Exports are cached under `<cache>/encoders/<key>/` (key: the model's folder and weights or hub commit, torch,
opset), written to a temporary folder and renamed, so concurrent builders never read half a file.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

OPSET = 17
OUTPUT = "last_hidden_state"
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def input_names(st_model) -> list[str]:
    """The tokenizer outputs the transformer's forward takes (BERT: ids, mask, token types)."""
    transformer = st_model[0].auto_model
    params = set(inspect.signature(transformer.forward).parameters)
    return [k for k in st_model.preprocess(["probe"]) if k in params]


def export_key(st_model, model_path: str) -> str:
    """Changes when the weights (a folder's files, a hub model's commit), torch or the opset change."""
    import torch

    commit = getattr(st_model[0].auto_model.config, "_commit_hash", None)
    folder = Path(model_path)
    parts = [str(folder.resolve()) if folder.exists() else model_path, str(commit), torch.__version__, str(OPSET)]
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = f.stat()
        parts.append(f"{f.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def export_onnx(st_model, model_path: str, cache: Path, int8: bool) -> Path:
    """The model's transformer as ONNX (fp32, or int8 weights), exported once and cached."""
    folder = cache / export_key(st_model, model_path)
    reduce_range = int8 and not cpu_has_vnni()
    target = folder / ("model.onnx" if not int8 else "model_int8_7bit.onnx" if reduce_range else "model_int8.onnx")
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        logger.info("exporting %s to ONNX (once; cached in %s)", model_path, folder)
        _atomic(fp32, lambda tmp: _torch_export(st_model, tmp))
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logger.info("quantizing %s to int8 (once)", fp32)
        _atomic(target, lambda tmp: quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8, per_channel=True,
                                                     reduce_range=reduce_range, op_types_to_quantize=["MatMul"]))
    return target


def cpu_has_vnni() -> bool:
    """Whether the CPU has VNNI int8 dot products. Without them ONNX Runtime's u8s8 kernels can saturate, and its
    docs advise 7-bit weights (`reduce_range`); on an AMX box 7-bit weights measured the same cosine to fp32, on an
    AVX2-only AMD EPYC (7-bit, the only choice there) min cosine 0.989 over the parity test's 32 questions."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: keep 8-bit weights
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _atomic(target: Path, write: Callable[[Path], object]) -> None:
    tmpdir = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        write(tmpdir / target.name)
        os.replace(tmpdir / target.name, target)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _torch_export(st_model, path: Path) -> None:
    import torch

    names = input_names(st_model)
    sample = st_model.preprocess(["a probe text", "a second, longer probe text for the export"])
    transformer = st_model[0].auto_model.eval()

    class Transformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=True)), return_dict=True)[OUTPUT]

    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, OUTPUT]}
    # The TorchScript exporter (dynamo=True needs onnxscript, not in the lock). Its tracer warns that the
    # attention code's shape checks become constants: true for this graph's inputs, and the parity tests
    # (queries and 256-token passages) cover it, so the warnings are silenced rather than shown to users.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Transformer(), tuple(sample[n].cpu() for n in names), str(path), input_names=names,
                          output_names=[OUTPUT], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def onnxruntime_runner(path: Path, threads: int | None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run([OUTPUT], feed)[0]


def openvino_runner(path: Path, threads: int | None, bf16: bool) -> tuple[Runner, str]:
    """An OpenVINO CPU model and its effective precision ('bf16' only where the CPU runs it)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    effective = "bf16" if compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16 else "fp32"

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        return compiled.create_infer_request().infer(feed)[OUTPUT]  # a request per call: callers may be threads

    return run, effective
