"""``mitotype evaluate``: predictions of one model (or the mean of several) on a labelled data set, then the
metrics, the plots and the report in one folder.

Outputs (all written atomically): ``metrics.json``, ``predictions.csv``, ``roc.png``, ``confusion.png``, ``errors.png``,
``domains.png``, ``reliability.png``, ``report.md``, ``run.json``. A calibrated model file adds the ``trust``
section to metrics.json and report.md (``evaluate.trust``) and ``prediction_set``, ``shift_score`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitotype import metrics as M
from mitotype.errors import MitotypeError
from mitotype.evaluate import plots
from mitotype.evaluate.report import evaluation_report
from mitotype.io import atomic_write, provenance, sha256_file, write_json, write_text
from mitotype.models.inference import ensemble_threshold, resolve_device

PLOTS = {"ROC": "roc.png", "Confusion matrix": "confusion.png",
         "Balanced accuracy per domain": "domains.png", "Reliability diagram": "reliability.png"}
PREDICTION_COLUMNS = ("path", "page", "domain", "group", "label", "p_atypical", "class")


def labelled(figures: Sequence, spec: str) -> None:
    """Evaluation needs a label on every figure; say which reader option gives them."""
    missing = [f for f in figures if f.label is None]
    if missing:
        raise MitotypeError(f"data spec {spec!r}: {len(missing)} of {len(figures)} figures have no label "
                            f"(e.g. {missing[0].name}); evaluate needs labelled data "
                            "(for stacks add :gt=GROUND_TRUTH.json)")


def _sha256(path: str | Path) -> str | None:
    return sha256_file(path) if Path(path).is_file() else None


def model_info(path: str | Path, loaded: Any) -> dict[str, Any]:
    """What the report and run.json say about one model file ('default' also names the shipped file)."""
    from mitotype.models.modelfile import model_file

    cfg = loaded.config
    file = model_file(path)
    return {"path": str(path), "file": str(file), "sha256": _sha256(file), "threshold": float(loaded.threshold),
            "encoder": cfg.model.encoder, "dense_tasks": list(cfg.model.dense_tasks),
            "crop_size": cfg.model.crop_size, "input_size": cfg.model.input_size,
            "trained_on": (loaded.meta or {}).get("data_spec")}


def predict_members(models: Sequence[Any], images: np.ndarray, batch_size: int = 64, tta: bool = False,
                    device: str = "cpu", progress: bool = False) -> np.ndarray:
    """(n_models, N) P(atypical) per model; their mean is the ensemble's (as ``predict_proba`` averages).
    The backend is predict's (``auto``: onnxruntime on CPU), so that evaluate scores what predict answers."""
    return predict_with_features(models, images, batch_size, tta, device, progress, features=False)[0]


def predict_with_features(models: Sequence[Any], images: np.ndarray, batch_size: int = 64, tta: bool = False,
                          device: str = "cpu", progress: bool = False, features: bool = True,
                          threads: int | None = None) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """:func:`predict_members` and each model's (N, C) pooled features (None where it has none), from the
    same forward passes."""
    from mitotype.models.inference import Predictor

    probs, feats = [], []
    for m in models:
        predictor = Predictor([m], "auto", device, tta=tta, features=features, threads=threads)
        if progress:
            from tqdm.auto import tqdm

            with tqdm(total=predictor.steps(len(images), batch_size), desc="predict", unit="batch") as bar:
                out = predictor.run(images, batch_size, on_batch=lambda: bar.update(1))
        else:
            out = predictor.run(images, batch_size)
        probs.append(out.probs)
        feats.append(out.features[0])
    return np.stack(probs), feats


def write_predictions(path: str | Path, figures: Sequence, probs: np.ndarray, threshold: float,
                      members: np.ndarray | None = None, columns: dict[str, Any] | None = None) -> None:
    """``predictions.csv``: one row per figure; with several models also ``p_model<i>`` per member, then
    ``columns`` (name -> values; None values are left out: the trust columns)."""
    import pandas as pd

    pred = M.predict_class(probs, threshold)
    table = pd.DataFrame({
        "path": [f.path for f in figures],
        "page": pd.array([f.page for f in figures], dtype="Int64"),
        "domain": [f.domain for f in figures], "group": [f.group for f in figures],
        "label": [f.label for f in figures], "p_atypical": np.asarray(probs, dtype=float),
        "class": np.where(pred == 1, "atypical", "normal")})
    if members is not None and len(members) > 1:
        for i, p in enumerate(members):
            table[f"p_model{i}"] = np.asarray(p, dtype=float)
    for name, values in (columns or {}).items():
        if values is not None:
            table[name] = list(values)
    with atomic_write(path, newline="") as fh:
        table.to_csv(fh, index=False)


def read_predictions(path: str | Path) -> Any:
    """``predictions.csv`` back as a DataFrame (MitotypeError if it lacks the columns)."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype={"domain": str, "group": str, "path": str})
    except (OSError, ValueError) as exc:
        raise MitotypeError(f"{path}: cannot read predictions ({exc})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise MitotypeError(f"{path}: predictions lack column(s) {', '.join(missing)}")
    return table


def write_evaluation(out_dir: str | Path, figures: Sequence, probs: np.ndarray, threshold: float, spec: str,
                     models: Sequence[dict[str, Any]], members: np.ndarray | None = None,
                     n_boot: int = 1000, seed: int = 0, plots_and_report: bool = True,
                     extra_plots: dict[str, str] | None = None, trust: dict[str, Any] | None = None,
                     trust_columns: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Everything ``evaluate`` writes, from the probabilities alone (the experiment runner reuses it).
    ``trust``: the section of ``evaluate.trust.trust_section``, with its per-figure ``trust_columns``.

    ``plots_and_report=False`` writes only metrics.json, predictions.csv and run.json (large grids);
    ``extra_plots`` (caption -> file in ``out_dir``) are linked in the report, e.g. the error gallery."""
    out = Path(out_dir)
    labels = np.array([f.label for f in figures], dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    result = M.compute_metrics(labels, probs, threshold, domains=[f.domain for f in figures],
                               groups=[f.group for f in figures], n_boot=n_boot, seed=seed)
    cal = M.calibration(labels, probs)
    result["ece"] = cal["ece"]
    result["spec"] = spec
    result["models"] = [m["path"] for m in models]
    if members is not None and len(members) > 1:  # each member alone, at its own threshold
        result["members"] = [
            {"path": info["path"], "threshold": info["threshold"],
             **{k: v for k, v in M.summarise(labels, p, info["threshold"], None, 0, seed).items()
                if k in M.METRICS}}
            for info, p in zip(models, members)]
    if trust is not None:
        result["trust"] = trust
    write_predictions(out / "predictions.csv", figures, probs, threshold, members, trust_columns)
    prov = provenance(spec=spec, threshold=threshold, n_boot=n_boot, seed=seed, models=list(models), **extra)
    write_json(out / "run.json", prov)
    if plots_and_report:
        plots.roc_plot(labels, probs, threshold, out / PLOTS["ROC"], auroc=result["auroc"])
        plots.confusion_plot(result["confusion"], out / PLOTS["Confusion matrix"])
        plots.domain_plot(result, out / PLOTS["Balanced accuracy per domain"])
        plots.reliability_plot(cal, out / PLOTS["Reliability diagram"])
        report = evaluation_report(result, models, spec, {**PLOTS, **(extra_plots or {})}, prov, cal)
        if trust is not None:
            from mitotype.evaluate.trust import trust_report

            report += "\n" + trust_report(trust)
        write_text(out / "report.md", report)
    write_json(out / "metrics.json", result)  # last: its presence marks a finished evaluation
    return result


def write_error_gallery(out_dir: Path, figures: Sequence, images: np.ndarray, probs: np.ndarray,
                        threshold: float, model: Any, device: str = "cpu") -> str:
    """``errors.png`` (see :mod:`mitotype.evaluate.gallery`); the masks come from ``model``'s segmentation
    head, computed for the shown crops only. Returns the file name."""
    from mitotype.evaluate import gallery

    labels = np.array([f.label for f in figures])
    shown = np.concatenate(list(gallery.ranked_errors(labels, probs, threshold).values())).astype(int)
    masks = None
    sub = gallery.predicted_masks(model, images[shown], device=device) if len(shown) else None
    if sub is not None:
        masks = np.zeros(images.shape[:3], dtype=np.float32)
        masks[shown] = sub
    gallery.error_gallery(out_dir / "errors.png", images, labels, probs, threshold,
                          [str(f.domain) for f in figures], [f.name for f in figures], masks)
    return "errors.png"


def evaluate(model_paths: Sequence[str | Path], spec: str, out_dir: str | Path, tta: bool = False,
             batch_size: int = 64, device: str = "auto", n_boot: int = 1000, threshold: float | None = None,
             size_policy: str = "center-crop", seed: int = 0, progress: bool = False,
             figures: Sequence | None = None, plots_and_report: bool = True,
             alpha: float | None = None, threads: int | None = None) -> dict[str, Any]:
    """Evaluate one model file, or the mean probability of several, on the figures ``spec`` names.

    ``figures`` (optional) replaces reading ``spec``: the experiment runner passes a held-out subset and
    keeps ``spec`` as its description. ``alpha``: error level of the prediction sets (None: 0.1).
    """
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.evaluate.trust import trust_section
    from mitotype.models import trust as T
    from mitotype.models.modelfile import load_model

    if not model_paths:
        raise MitotypeError("evaluate: give at least one --model")
    T.check_alpha(alpha)
    device = resolve_device(device)
    figures = list(figures) if figures is not None else load_figures(spec)
    labelled(figures, spec)
    models = [load_model(str(p), device=device) for p in model_paths]
    infos = [model_info(p, m) for p, m in zip(model_paths, models)]
    t = ensemble_threshold(models, threshold)
    tta = tta or any((m.meta or {}).get("tta") for m in models)  # what was run: a file may ask for it
    size = max(m.config.model.crop_size for m in models)
    images = load_images(figures, size=size, policy=size_policy, progress=progress)
    T.prediction_sets(models, np.zeros(0), alpha)  # an --alpha without a reference fails before any work
    members, features = predict_with_features(models, images, batch_size=batch_size, tta=tta, device=device,
                                              progress=progress, features=T.wants_features(models),
                                              threads=threads)
    probs = members.mean(axis=0)
    sets, shift = T.prediction_sets(models, probs, alpha), T.shift_scores(models, features)
    trust = trust_section([f.label for f in figures], probs, [f.domain for f in figures], models, sets, shift,
                          T.check_alpha(alpha))
    extra_plots = None
    if plots_and_report:
        extra_plots = {"Errors (false positives and false negatives)":
                       write_error_gallery(Path(out_dir), figures, images, members.mean(axis=0), t, models[0],
                                           device)}
    return write_evaluation(out_dir, figures, members.mean(axis=0), t, spec, infos, members=members,
                            n_boot=n_boot, seed=seed, plots_and_report=plots_and_report, tta=tta, device=device,
                            size_policy=size_policy, extra_plots=extra_plots, trust=trust,
                            trust_columns={"prediction_set": sets, "shift_score": shift},
                            threshold_source="--threshold" if threshold is not None else
                            ("model file" if len(models) == 1 else "mean of the models' thresholds"))
