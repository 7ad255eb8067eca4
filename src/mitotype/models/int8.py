"""Int8 copies of an exported graph (``mitotype export --int8``, ``mitotype bench``): static QDQ with
calibration crops, and onnxruntime's dynamic quantisation. Their accuracy and speed: docs/PERFORMANCE.md."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.models.onnx import read_metadata


def calibration_batch(loaded: Any, spec: str, n: int = 320, seed: int = 0) -> np.ndarray:
    """``n`` figures of the data spec (chosen with ``seed``), prepared as the graph's input."""
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.models.inference import model_inputs, preprocessing_of

    figures = load_figures(spec)
    pick = np.random.default_rng(seed).choice(len(figures), min(n, len(figures)), replace=False)
    m = loaded.config.model
    images = load_images([figures[i] for i in sorted(pick)], size=m.crop_size)
    return model_inputs(images, preprocessing_of(loaded))


def quantise_int8(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray, seed_note: str = "",
                  method: str = "Percentile") -> Path:
    """A static int8 QDQ copy of an exported graph: per-channel int8 weights, uint8 activations whose ranges
    come from ``calibration`` (float32 NCHW batches prepared like the graph's input, a few hundred training
    crops). Percentile calibration: MinMax lost more AUROC on the AMi-Br test split in probes; percentile's
    loss is measured by ``mitotype bench --sections int8`` (docs/PERFORMANCE.md). The source graph's
    metadata is kept, plus ``quantisation``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mitotype.io import write_bytes

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i:i + 32] for i in range(0, len(calibration), 32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": np.ascontiguousarray(batch, dtype=np.float32)}

    out_path = Path(out_path)
    meta = read_metadata(fp32_path)
    with tempfile.TemporaryDirectory(prefix="mitotype-int8-") as tmp:
        pre, quantised = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(quantised), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method))
        proto = onnx.load(str(quantised))
    meta["quantisation"] = (f"static int8 QDQ, per-channel int8 weights, uint8 activations, {method} "
                            f"calibration on {len(calibration)} crops {seed_note}").strip()
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    write_bytes(out_path, proto.SerializeToString())
    return out_path


def quantise_dynamic(fp32_path: str | Path, out_path: str | Path) -> Path:
    """onnxruntime's dynamic int8 quantisation of an exported graph (weights int8, activations quantised per
    batch at run time; no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8)
    return Path(out_path)
