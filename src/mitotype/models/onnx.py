"""ONNX export of the classification path, and running it with onnxruntime.

The graph takes ``image``: float32 (N, 3, input_size, input_size), RGB, already normalised
``(pixel / 255 - mean) / std`` with the model's mean and std, dynamic batch; it returns ``logits`` (N, 2)
and ``p_atypical`` (N,). The auxiliary decoders are left out (they cost nothing at inference) unless the
model pools features by its predicted figure mask, which then stays in the graph. Everything a user needs
to prepare the input and read the output is stored in the file's ``metadata_props``: mean, std, input
and crop size, microns per pixel, threshold, class names, layout, and the source model's SHA-256.

``mitotype predict`` (backend ``auto`` on CPU, or ``onnx``) exports once per model file into
``cache_dir("onnx")``, keyed by the SHA-256 of the model file's content, the opset, the graph format and
the mitotype version, and reuses it: :func:`open_model` then reads everything it needs (config, threshold,
preprocessing) from the cached graph's metadata and never imports torch (about a second per process). A
cached graph whose metadata names another source hash, or that onnxruntime cannot open, is rebuilt; an
unwritable cache falls back to a temporary file, a failed export to eager PyTorch, both with a warning.
Int8 copies of a graph: :mod:`mitotype.models.int8`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError
from mitotype.io import sha256_file

DEFAULT_OPSET = 17
# Bump when the exported graph or its metadata change meaning: cached files of older formats are rebuilt.
GRAPH_FORMAT = 4  # 3: "tta" (the model asks for 8-fold dihedral averaging); 4: "features" output and the
# trust references (calibration, conformal, shift) in the metadata
EXPORT_FAILED = "onnx_export_failed"  # meta key of a LoadedModel whose export open_model could not do


def metadata(loaded: Any) -> dict[str, str]:
    """What the ONNX file's users need, as strings (ONNX metadata values are strings; lists as JSON).
    A calibrated model's references travel too (``calibration``, ``conformal``, ``shift``), so that the
    onnxruntime path gives prediction sets and shift scores without reading the model file."""
    from mitotype import __version__

    m = loaded.config.model
    meta = loaded.meta or {}
    trust = {k: json.dumps(meta[k]) for k in ("calibration", "conformal") if meta.get(k)}
    if meta.get("shift"):
        from mitotype.models.shift import encode

        trust["shift"] = encode(meta["shift"])
    return {**trust,
        "producer": "mitotype",
        "mitotype_version": __version__,
        "input": "image: float32 NCHW RGB, (pixel/255 - mean)/std, input_size x input_size, dynamic batch",
        "outputs": "logits (N, 2) [normal, atypical]; p_atypical (N,) = softmax(logits)[:, 1]; features "
                   "(N, C) pooled encoder features (single models; the shift score's input)",
        "mean": json.dumps(list(m.mean)),
        "std": json.dumps(list(m.std)),
        "input_size": str(m.input_size),
        "crop_size": str(m.crop_size),
        "mpp": str(m.mpp),
        "resize": "bilinear (antialiased) from crop_size to input_size",
        "threshold": repr(float(loaded.threshold)),
        "tta": "1" if (loaded.meta or {}).get("tta") else "0",
        "class_names": json.dumps(["normal", "atypical"]),
        "encoder": m.encoder,
        "source_model_sha256": sha256_file(loaded.path) if getattr(loaded, "path", "") else "",
        "graph_format": str(GRAPH_FORMAT),
        "run_config": json.dumps(loaded.config.to_dict(), default=str),
    }


def _classifier(model: Any) -> Any:
    import torch

    class Classifier(torch.nn.Module):
        """The classification path only: encoder (+ mask for mask pooling) and head."""

        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if hasattr(self.net, "classify"):  # a single network: its pooled features are an output too
                logits, pooled = self.net.classify(image)
                logits = logits.float()
                return logits, torch.softmax(logits, dim=1)[:, 1], pooled.float()
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
    names = ["logits", "p_atypical"] + (["features"] if hasattr(wrapper.net, "classify") else [])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.export")  # processes exporting at once (Slurm arrays)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings mean nothing to users
            try:
                # TorchScript exporter: a fraction of a second and one self-contained file for plain CNNs
                torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["image"], output_names=names,
                                  dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}})
            except Exception:  # noqa: BLE001 - not traceable, or the legacy exporter is gone: use torch.export
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(wrapper, (example,), str(tmp), dynamo=True, opset_version=opset,
                                  input_names=["image"], output_names=names,
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


def cache_key(model_sha256: str, opset: int = DEFAULT_OPSET) -> str:
    from mitotype import __version__

    return f"{model_sha256[:20]}-opset{opset}-g{GRAPH_FORMAT}-v{__version__}"


def _writable_cache() -> Path | None:
    from mitotype.data.cache import cache_dir

    try:
        folder = cache_dir("onnx")
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def cached_path(model_sha256: str, opset: int = DEFAULT_OPSET) -> Path:
    """Where the graph of a model file of this content lives in the cache (the folder may be read-only:
    a container can ship a cache built at image build time)."""
    from mitotype.data.cache import cache_dir

    return cache_dir("onnx", create=False) / f"{cache_key(model_sha256, opset)}.onnx"


def cached_export(loaded: Any, opset: int = DEFAULT_OPSET, model_sha256: str | None = None) -> Path:
    """The ONNX file of ``loaded`` in the cache (exported on first use; rebuilt when stale).

    If the cache folder cannot be written, the graph goes to a temporary file (with a warning): slower on
    every start, never a failure.
    """
    if not getattr(loaded, "path", ""):
        raise MitotypeError("the ONNX backend needs a model loaded from a file")
    sha = model_sha256 or sha256_file(loaded.path)
    name = cached_path(sha, opset).name
    if _is_current(cached_path(sha, opset), sha):
        return cached_path(sha, opset)
    folder = _writable_cache()
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="mitotype-onnx-"))
        warnings.warn(f"the ONNX cache ({os.environ.get('MITOTYPE_CACHE') or '~/.cache/mitotype'}) is not "
                      f"writable; exporting to {folder} for this run only (set MITOTYPE_CACHE to a writable "
                      "folder to export once)", stacklevel=2)
    path = folder / name
    if not _is_current(path, sha):
        try:
            export_onnx(loaded, path, opset)
        except OSError as exc:  # the folder became unwritable (full disk, read-only mount): this run only
            path = Path(tempfile.mkdtemp(prefix="mitotype-onnx-")) / name
            warnings.warn(f"cannot write the ONNX cache ({exc}); exporting to {path} for this run only",
                          stacklevel=2)
            export_onnx(loaded, path, opset)
    return path


def _is_current(path: Path, model_sha256: str) -> bool:
    if not path.is_file():
        return False
    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply not current
        return False
    return _describes(meta, model_sha256)


def _describes(meta: dict[str, str], model_sha256: str) -> bool:
    """A cached graph is used only if its metadata names the same source model and graph format (a file
    copied under another name, or left by an older mitotype, is rebuilt rather than trusted)."""
    return meta.get("source_model_sha256") == model_sha256 and meta.get("graph_format") == str(GRAPH_FORMAT)


def session_options(threads: int | None = None) -> Any:
    """Sequential execution, full graph optimisation, ``threads`` intra-op threads (None: OMP_NUM_THREADS,
    else onnxruntime's choice of all physical cores) and no idle spinning of the thread pool: on a machine
    shared with other jobs a spinning thread only takes the core from the one doing work."""
    import onnxruntime as ort

    from mitotype.models.inference import default_threads

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings would reach grand-challenge logs
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = default_threads() if threads is None else threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxClassifier:
    """An onnxruntime session for one model: ``__call__(batch float32 NCHW) -> P(atypical) (N,)``,
    ``logits(batch) -> (N, 2)``, ``metadata`` (the graph's metadata_props)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise MitotypeError(f"{path}: onnxruntime cannot load it: {exc}") from None
        self.path = Path(path)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _run(self, name: str, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([name], {"image": np.ascontiguousarray(batch, dtype=np.float32)})
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run("p_atypical", batch)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._run("logits", batch)

    def logits_and_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and pooled encoder features from one run (features None for a graph without them: an
        ensemble's, whose members each have their own)."""
        if "features" not in self.outputs:
            return self.logits(batch), None
        logits, feats = self.session.run(["logits", "features"],
                                         {"image": np.ascontiguousarray(batch, dtype=np.float32)})
        return logits, feats


@dataclass
class OnnxModel:
    """A model file opened for onnxruntime from its cached graph, without building the torch network:
    what ``models.inference`` and ``predict`` read of a LoadedModel (``model`` stays None)."""

    config: Any
    threshold: float
    meta: dict[str, Any]
    path: str
    classifier: OnnxClassifier
    model: Any = field(default=None)


def _from_graph(classifier: OnnxClassifier, model_path: Path) -> OnnxModel:
    from mitotype.config import config_from_dict

    meta = classifier.metadata
    cfg = config_from_dict(json.loads(meta["run_config"]), where=f"{classifier.path} (stored config)")
    pre = {"crop_size": int(meta["crop_size"]), "input_size": int(meta["input_size"]),
           "mean": json.loads(meta["mean"]), "std": json.loads(meta["std"]), "mpp": float(meta["mpp"]),
           "tta": meta.get("tta") == "1"}
    pre.update({k: json.loads(meta[k]) for k in ("calibration", "conformal") if k in meta})
    if "shift" in meta:
        from mitotype.models.shift import decode

        pre["shift"] = decode(meta["shift"])
    return OnnxModel(config=cfg, threshold=float(meta["threshold"]), meta=pre, path=str(model_path),
                     classifier=classifier)


def packaged_graph(name: str = "default") -> Path:
    """A shipped model's graph, built with `mitotype export --model NAME --onnx src/mitotype/assets/NAME.onnx`
    (tests/models/test_onnx.py fails when it no longer describes NAME.pt)."""
    from mitotype.models.modelfile import shipped_model_path

    return shipped_model_path(name).with_suffix(".onnx")


def open_model(model: str | Path = "default", device: str = "cpu", threads: int | None = None,
               opset: int = DEFAULT_OPSET) -> Any:
    """``model`` (a file or "default") ready for onnxruntime: an :class:`OnnxModel` from the cache when the
    graph of this exact file content is there (no torch import), else the LoadedModel, exported into the
    cache and opened (:class:`OnnxModel`). A model that cannot be exported comes back as the LoadedModel,
    which ``predict_proba(backend="auto")`` runs with PyTorch."""
    from mitotype.models.modelfile import SHIPPED, model_file, shipped_model_path

    path = model_file(model)
    if not path.is_file():
        from mitotype.models.modelfile import load_model

        return load_model(model, device=device)  # its error message says what is missing
    sha = sha256_file(path)
    # the shipped model's graph ships beside it (a container starts with an empty cache), else the cache
    shipped = [n for n in SHIPPED if path.resolve() == shipped_model_path(n).resolve()]  # also through a link
    candidates = [packaged_graph(shipped[0])] if shipped and opset == DEFAULT_OPSET else []
    for cached in [*candidates, cached_path(sha, opset)]:
        if cached.is_file():
            with contextlib.suppress(MitotypeError):  # damaged after it was written: rebuilt below
                classifier = OnnxClassifier(cached, device, threads)
                if _describes(classifier.metadata, sha):  # a stale packaged graph is never used
                    return _from_graph(classifier, path)
    from mitotype.models.modelfile import load_model

    loaded = load_model(path, device=device)
    try:
        onnx_path = cached_export(loaded, opset, model_sha256=sha)
    except MitotypeError as exc:
        warnings.warn(f"{path}: ONNX export failed ({exc}); running eager PyTorch", stacklevel=2)
        loaded.meta[EXPORT_FAILED] = str(exc)  # backend auto then goes straight to torch, no second try
        return loaded
    return _from_graph(OnnxClassifier(onnx_path, device, threads), path)


def onnx_classifier(loaded: Any, device: str = "cpu", opset: int = DEFAULT_OPSET,
                    threads: int | None = None) -> OnnxClassifier:
    """Export (once, cached) and open ``loaded`` for onnxruntime."""
    if isinstance(loaded, OnnxModel):
        return loaded.classifier
    return OnnxClassifier(cached_export(loaded, opset), device, threads)


def make_runner(loaded: Any, device: str = "cpu", threads: int | None = None, features: bool = False) -> Any:
    """The hook of ``models.inference``: a callable float32 (N, 3, S, S) array -> (N, 2) logits array;
    ``features``: -> (logits, (N, C) pooled features or None)."""
    classifier = onnx_classifier(loaded, device, threads=threads)
    return classifier.logits_and_features if features else classifier.logits
