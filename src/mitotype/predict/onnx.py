"""ONNX export of the classification path, and running it with onnxruntime.

The graph takes ``image``: float32 (N, 3, input_size, input_size), RGB, already normalised
``(pixel / 255 - mean) / std`` with the model's mean and std, dynamic batch; it returns ``logits`` (N, 2)
and ``p_atypical`` (N,). The auxiliary decoders are left out (they cost nothing at inference) unless the
model pools features by its predicted figure mask, which then stays in the graph. Everything a user needs
to prepare the input and read the output is stored in the file's ``metadata_props``: mean, std, input
and crop size, microns per pixel, threshold, class names, layout, and the source model's SHA-256.

``predict --backend onnx`` exports once per model file into ``cache_dir("onnx")`` (keyed by the model
file's hash, the opset and the mitotype version) and reuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError
from mitotype.io import sha256_file

DEFAULT_OPSET = 17


def metadata(loaded: Any) -> dict[str, str]:
    """What the ONNX file's users need, as strings (ONNX metadata values are strings; lists as JSON)."""
    from mitotype import __version__

    m = loaded.config.model
    return {
        "producer": "mitotype",
        "mitotype_version": __version__,
        "input": "image: float32 NCHW RGB, (pixel/255 - mean)/std, input_size x input_size, dynamic batch",
        "outputs": "logits (N, 2) [normal, atypical]; p_atypical (N,) = softmax(logits)[:, 1]",
        "mean": json.dumps(list(m.mean)),
        "std": json.dumps(list(m.std)),
        "input_size": str(m.input_size),
        "crop_size": str(m.crop_size),
        "mpp": str(m.mpp),
        "resize": "bilinear (antialiased) from crop_size to input_size",
        "threshold": repr(float(loaded.threshold)),
        "class_names": json.dumps(["normal", "atypical"]),
        "encoder": m.encoder,
        "source_model_sha256": sha256_file(loaded.path) if getattr(loaded, "path", "") else "",
    }


def _classifier(model: Any) -> Any:
    import torch

    class Classifier(torch.nn.Module):
        """The classification path only: encoder (+ mask for mask pooling) and head."""

        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.net(image, dense=False).logits.float()
            return logits, torch.softmax(logits, dim=1)[:, 1]

    return Classifier(model).eval()


def export_onnx(loaded: Any, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``loaded`` (a LoadedModel) to ``path`` atomically, check it with onnx.checker; returns path."""
    import copy
    import warnings

    import onnx
    import torch

    from mitotype.io import write_bytes

    path = Path(path)
    size = loaded.config.model.input_size
    wrapper = _classifier(copy.deepcopy(loaded.model).float().cpu().eval())
    example = torch.zeros(2, 3, size, size)
    tmp = path.with_name(f".{path.name}.export")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings mean nothing to users
            try:
                # TorchScript exporter: a fraction of a second and one self-contained file for plain CNNs
                torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["image"], output_names=["logits", "p_atypical"],
                                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"},
                                                "p_atypical": {0: "batch"}})
            except Exception:  # noqa: BLE001 - not traceable, or the legacy exporter is gone: use torch.export
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(wrapper, (example,), str(tmp), dynamo=True, opset_version=opset,
                                  input_names=["image"], output_names=["logits", "p_atypical"],
                                  dynamic_shapes={"image": {0: batch}}, external_data=False)
        proto = onnx.load(str(tmp))
    except MitotypeError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
        raise MitotypeError(f"ONNX export of {loaded.path or 'the model'} failed: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
    finally:
        tmp.unlink(missing_ok=True)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata(loaded))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise MitotypeError(f"the exported ONNX graph does not pass onnx.checker: {exc}") from None
    write_bytes(path, proto.SerializeToString())
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def cached_export(loaded: Any, opset: int = DEFAULT_OPSET) -> Path:
    """The ONNX file of ``loaded`` in the cache (exported on first use)."""
    from mitotype import __version__
    from mitotype.data.cache import cache_dir

    if not getattr(loaded, "path", ""):
        raise MitotypeError("the ONNX backend needs a model loaded from a file")
    key = f"{sha256_file(loaded.path)[:20]}-opset{opset}-v{__version__}"
    path = cache_dir("onnx") / f"{key}.onnx"
    if not path.is_file():
        export_onnx(loaded, path, opset)
    return path


class OnnxClassifier:
    """An onnxruntime session for one model: ``__call__(batch float32 NCHW) -> P(atypical) (N,)``,
    ``logits(batch) -> (N, 2)``."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: onnxruntime's warnings would reach grand-challenge logs
        # Follow torch's thread setting (one knob for both backends); spinning inter-op threads only
        # compete with the intra-op ones on a small CPU (docs/PERFORMANCE.md).
        import torch

        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise MitotypeError(f"{path}: onnxruntime cannot load it: {exc}") from None
        self.path = Path(path)

    def _run(self, name: str, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([name], {"image": np.ascontiguousarray(batch, dtype=np.float32)})
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run("p_atypical", batch)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._run("logits", batch)


def onnx_classifier(loaded: Any, device: str = "cpu", opset: int = DEFAULT_OPSET) -> OnnxClassifier:
    """Export (once, cached) and open ``loaded`` for onnxruntime."""
    return OnnxClassifier(cached_export(loaded, opset), device)


def make_runner(loaded: Any, device: str = "cpu") -> Any:
    """The hook of ``models.inference``: a callable float32 (N, 3, S, S) tensor -> (N, 2) logits tensor."""
    import torch

    classifier = onnx_classifier(loaded, device)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(classifier.logits(x.detach().cpu().float().numpy()))

    return run
