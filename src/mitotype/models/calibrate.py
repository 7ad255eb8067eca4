"""``mitotype calibrate``: fit temperature scaling, the conformal reference and the shift reference of a
model on held-out labelled figures and write them into a new model file (see
:mod:`mitotype.models.calibration` and :mod:`mitotype.models.shift`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError
from mitotype.models import calibration as C
from mitotype.models.shift import fit_reference

VALIDATION = "val"  # the --data value meaning "the model's own validation part"


def validation_figures(loaded: Any) -> tuple[list, str]:
    """The validation part the model was trained with, rebuilt from its stored data spec and seed."""
    from mitotype.data.spec import load_figures
    from mitotype.data.splits import group_holdout

    extra = loaded.meta.get("extra") or {}
    spec, val_spec = extra.get("data_spec"), extra.get("val_spec")
    if val_spec:
        return load_figures(val_spec), val_spec
    if not spec:
        raise MitotypeError(f"{loaded.path}: the model file does not name its training data; give --data SPEC")
    figures = load_figures(spec)
    _, val_idx = group_holdout(figures, loaded.config.train.val_fraction, loaded.config.train.seed)
    return [figures[i] for i in val_idx], f"{spec} (validation part: val_fraction "\
        f"{loaded.config.train.val_fraction}, seed {loaded.config.train.seed})"


def _last_linear(state: dict[str, Any]) -> str:
    keys = sorted((k for k in state if k.startswith("head.mlp.") and k.endswith(".weight")),
                  key=lambda k: int(k.split(".")[2]))
    if not keys:
        raise MitotypeError("the model has no classification head to calibrate")
    return keys[-1].removesuffix(".weight")


def calibrate(model_path: str, spec: str, out: str | Path, alpha: float = 0.1, batch_size: int = 64,
              progress: bool = False) -> dict[str, Any]:
    """Fit, bake in, write ``out``; returns what was fitted (temperature, log-loss and ECE before/after,
    the shift reference's rank and scale)."""
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.metrics import calibration as reliability
    from mitotype.models.inference import Predictor, predict_proba
    from mitotype.models.modelfile import FORMAT, load_model, model_file, read_payload, write_payload

    C.quantile([0.0], alpha)  # checks alpha before any work
    loaded = load_model(model_path)
    source = model_file(model_path)
    payload = read_payload(source)
    if payload.get("format") != FORMAT or "base_weights" in payload:
        raise MitotypeError(f"{model_path}: only a single trained model file can be calibrated (calibrate the "
                            "members, then join them with `mitotype ensemble`)")
    figures, where = validation_figures(loaded) if spec == VALIDATION else (load_figures(spec), spec)
    labels = np.array([f.label for f in figures])
    if any(f.label is None for f in figures):
        raise MitotypeError(f"{where}: calibration needs labelled figures")
    images = load_images(figures, size=loaded.config.model.crop_size, progress=progress)
    predicted = _predict_with_features(Predictor([loaded], "torch", features=True), images, batch_size,
                                       progress)
    raw, features = predicted.probs, predicted.features[0]
    t = C.fit_temperature(labels, raw)
    calibrated = C.sigmoid(C.logit(raw) / t)
    state = payload["state_dict"]
    last = _last_linear(state)
    for name in ("weight", "bias"):
        state[f"{last}.{name}"] = state[f"{last}.{name}"] / t
    old_threshold = float(payload["threshold"])
    payload["threshold"] = float(C.sigmoid(C.logit(old_threshold) / t))
    fitted = {"temperature": t, "fitted_on": where, "n": int(len(labels)), "n_atypical": int(labels.sum()),
              "log_loss_before": C.log_loss(labels, raw), "log_loss_after": C.log_loss(labels, calibrated),
              "ece_before": reliability(labels, raw)["ece"], "ece_after": reliability(labels, calibrated)["ece"],
              "threshold_before": old_threshold, "threshold_after": payload["threshold"]}
    payload["calibration"] = fitted
    payload["conformal"] = {"scores": C.conformal_scores(labels, calibrated), "alpha": float(alpha),
                            "fitted_on": where}
    # the features do not depend on the temperature (it only scales the last layer)
    channels = list(loaded.model.encoder.feature_info.channels())  # MitoNet.classify: every stage, in order
    payload["shift"] = fit_reference(features, channels, fitted_on=where)
    fitted["shift_channels"], fitted["shift_ranks"] = channels, payload["shift"]["ranks"]
    write_payload(out, payload)
    check = predict_proba([load_model(out)], images[:32], batch_size=batch_size)
    if not np.allclose(check, calibrated[:32], atol=1e-4):  # the baked-in temperature must give the fit
        raise MitotypeError(f"{out}: the calibrated model does not reproduce the fitted probabilities")
    return fitted


def _predict_with_features(predictor: Any, images: np.ndarray, batch_size: int, progress: bool) -> Any:
    if not progress:
        return predictor.run(images, batch_size)
    from tqdm.auto import tqdm

    with tqdm(total=predictor.steps(len(images), batch_size), desc="calibrate", unit="batch") as bar:
        return predictor.run(images, batch_size, on_batch=lambda: bar.update(1))
