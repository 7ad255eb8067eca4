"""``mitotype adapt``: adapt a trained model to a lab's unlabelled crops and write a new model file.

Steps (the methods are in :mod:`mitotype.models.adaptation`):

1. read the target folder(s) and refuse what cannot be a set of the model's figure crops (too few, slide
   sized, blank or grey images);
2. optionally TENT, then AdaBN: every batch-norm layer's running mean/var re-estimated on the target
   crops, through the model's own preprocessing (``inference.model_inputs``);
3. P(atypical) of the adapted network on the target, the class prior re-estimated by EM from it, and the
   prior change baked into the last layer's bias (every backend and the ONNX export report the target
   posterior), with the threshold moved by the same log-odds so that every decision stays the one the
   stored threshold makes (that threshold was tuned for balanced accuracy, which does not depend on the
   prior);
4. the file written atomically with what was done under ``adaptation``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError
from mitotype.models import adaptation as A

# Batch-norm statistics are a mean and a variance per channel of every layer (MobileNetV2: 52 layers, up to
# 960 channels); below a few batches of crops they follow the particular figures more than the lab.
MIN_IMAGES = 64
MAX_CROP_FACTOR = 4  # an image this many times the crop size is a slide or a field of view, not a crop
SIZE_FACTOR = 2  # crops more than this factor off the model's crop size are probably another scale
BLANK_STD = 2.0  # grey levels: an image this flat is blank (padding, a failed export), not tissue
GREY_DIFF = 1.0  # mean |R - G| + |G - B| below this: a grey-scale image, not an H&E colour crop
MAJORITY = 0.5  # more than this share of odd images refuses the folder; fewer give a warning
STALE = ("conformal", "shift")  # model-file references that adaptation makes stale (models/calibrate.py)
TENT_EPOCHS, TENT_LR = 1, 1e-3  # one pass of Adam over the target, as TENT's online setting


# --- the target crops -------------------------------------------------------------------------------------

def _entries(folder: Path) -> list[tuple[Path, int | None]]:
    from mitotype.data.images import IMAGE_SUFFIXES, TIFF_SUFFIXES, list_images, tiff_page_count

    if not folder.is_dir():
        raise MitotypeError(f"{folder}: " + ("not a folder; give the folder holding the crops" if folder.exists()
                                             else "folder not found"))
    entries: list[tuple[Path, int | None]] = []
    for path in list_images(folder, IMAGE_SUFFIXES):
        n = tiff_page_count(path) if path.suffix.lower() in TIFF_SUFFIXES else 1
        entries += [(path, None)] if n == 1 else [(path, page) for page in range(n)]
    if not entries:
        raise MitotypeError(f"{folder}: no images in this folder ({', '.join(IMAGE_SUFFIXES)}, searched "
                            "recursively)")
    return entries


def read_target(folders: list[str | Path], crop_size: int, min_images: int = MIN_IMAGES
                ) -> tuple[np.ndarray, list[str]]:
    """The crops of ``folders`` (recursive; every page of a TIFF stack) at ``crop_size`` (centre crop or
    zero padding, as predict does), and warnings; MitotypeError naming the folder when they cannot be a
    target (see the module constants for the limits)."""
    from mitotype.data.images import fit_size, read_rgb

    where = ", ".join(str(f) for f in folders)
    entries = [e for f in folders for e in _entries(Path(f))]
    if len(entries) < min_images:
        raise MitotypeError(f"{where}: {len(entries)} crop(s), fewer than the {min_images} adaptation needs: the "
                            "batch-norm statistics (a mean and variance per channel of every layer) are "
                            "re-estimated from them and would follow these few figures, not the lab")

    def read(entry: tuple[Path, int | None]) -> tuple[np.ndarray, tuple[int, int], float, float]:
        image = read_rgb(*entry)
        flat = image.astype(np.int16)
        grey = float(np.abs(np.diff(flat, axis=2)).sum(axis=2).mean())
        return fit_size(image, crop_size), image.shape[:2], float(flat.std()), grey

    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
        results = list(pool.map(read, entries))
    sizes = np.array([r[1] for r in results])
    big = int(np.argmax(sizes.max(axis=1)))
    if sizes[big].max() > MAX_CROP_FACTOR * crop_size:
        path, page = entries[big]
        raise MitotypeError(f"{path}{'' if page is None else f' (page {page})'}: image is {sizes[big][1]}x"
                            f"{sizes[big][0]} pixels, far larger than the model's {crop_size}x{crop_size} figure "
                            "crops; adapt on crops centred on mitotic figures at the model's scale")
    odd = {
        f"sizes far from the model's {crop_size} px crops (more than {SIZE_FACTOR}x off: another scale?)":
            (sizes.max(axis=1) > SIZE_FACTOR * crop_size) | (sizes.min(axis=1) < crop_size / SIZE_FACTOR),
        "blank (near-constant) images": np.array([r[2] < BLANK_STD for r in results]),
        "grey-scale images (not H&E colour crops)": np.array([r[3] < GREY_DIFF for r in results]),
    }
    warnings = []
    for what, flags in odd.items():
        share = float(flags.mean())
        if share > MAJORITY:
            raise MitotypeError(f"{where}: {flags.sum()} of {len(flags)} images are {what}; these do not look like "
                                "the model's mitotic-figure crops, and adapting to them would spoil the model")
        if flags.any():
            first = entries[int(np.argmax(flags))][0]
            warnings.append(f"{where}: {flags.sum()} of {len(flags)} images are {what}, e.g. {first}; they take "
                            "part in the adaptation")
    return np.stack([r[0] for r in results]), warnings


# --- the prior the model's posteriors belong to ------------------------------------------------------------

def source_prior(loaded: Any, payload: dict[str, Any]) -> tuple[float, str]:
    """(the prior of class atypical under which the network's P(atypical) is a posterior, where it comes
    from). Training with balanced class weights or balanced sampling (the default) weighs both classes
    equally, so the network learns posteriors for a 50 % prior whatever the training prevalence; unweighted
    training learns the training part's prevalence (from the data record in the model file)."""
    previous = payload.get("adaptation")
    if previous:  # an adapted file's bias already carries that target's prior
        return float(previous["prior_new"]), f"the earlier adaptation to {previous.get('target')}"
    t = loaded.config.train
    if t.balanced_sampling or t.class_weights == "balanced":
        return 0.5, "balanced classes in training (" + ("balanced sampling" if t.balanced_sampling
                                                        else "class_weights: balanced") + ")"
    extra = payload.get("extra") or {}
    if extra.get("data_spec"):
        from mitotype.data.spec import load_figures
        from mitotype.data.splits import group_holdout

        try:
            figures = load_figures(extra["data_spec"])
        except MitotypeError:
            figures = []
        if figures:
            train_idx = np.arange(len(figures))
            if not extra.get("val_spec"):
                train_idx, _ = group_holdout(figures, t.val_fraction, t.seed)
            labels = np.array([figures[i].label for i in train_idx], dtype=float)
            return float(labels.mean()), f"the training part of {extra['data_spec']} ({len(labels)} figures)"
    fitted = payload.get("calibration") or {}
    if fitted.get("n"):
        return fitted["n_atypical"] / fitted["n"], f"the calibration figures ({fitted['fitted_on']})"
    raise MitotypeError(f"{loaded.path}: the model was trained without class weights and its file does not say "
                        "with which prevalence; give it with --source-prior P")


# --- the whole command ------------------------------------------------------------------------------------

def _last_linear(model: Any) -> tuple[str, Any]:
    from torch import nn

    linears = [(name, m) for name, m in model.head.named_modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1][1].out_features != 2:
        raise MitotypeError("the model has no two-class classification head to carry the prior")
    return f"head.{linears[-1][0]}", linears[-1][1]


def adapt(model_path: str, folders: list[str | Path], out: str | Path, use_tent: bool = False,
          batch_size: int = 64, min_images: int = MIN_IMAGES, prior: float | None = None,
          progress: bool = False) -> dict[str, Any]:
    """Adapt, bake in, write ``out``; returns the record stored under ``adaptation`` (and ``warnings``)."""
    import torch

    from mitotype.models.inference import model_inputs, predict_proba, preprocessing_of
    from mitotype.models.modelfile import FORMAT, load_model, model_file, read_payload, write_payload

    loaded = load_model(model_path)
    payload = read_payload(model_file(model_path))
    if payload.get("format") != FORMAT or "base_weights" in payload:
        raise MitotypeError(f"{model_path}: only a single trained model file can be adapted (adapt the members, "
                            "then join them with `mitotype ensemble`)")
    model = loaded.model
    if not A.batch_norms(model):
        raise MitotypeError(f"{model_path}: the network has no batch-norm layers (encoder "
                            f"{loaded.config.model.encoder!r}); AdaBN needs a batch-normalised encoder")
    pre = preprocessing_of(loaded)
    images, warnings = read_target(folders, pre[0], min_images)
    source, source_where = (float(prior), "--source-prior") if prior is not None else source_prior(loaded, payload)

    n_batches = max(1, -(-len(images) // batch_size))  # split evenly: no batch of one for batch norm

    def batches(order: np.ndarray | None = None):
        index = np.arange(len(images)) if order is None else order
        for part in np.array_split(index, n_batches):
            yield torch.from_numpy(model_inputs(images[np.sort(part)], pre))

    def forward(net: Any, x: Any) -> Any:
        return net(x, dense=False).logits

    entropy = None
    if use_tent:  # shuffled once, with a fixed seed: the same folder gives the same file
        order = np.random.default_rng(0).permutation(len(images))
        entropy = A.tent(model, lambda: batches(order), forward, epochs=TENT_EPOCHS, lr=TENT_LR)
    updated = A.adabn(model, batches(), forward)
    probs = predict_proba([loaded], images, batch_size=batch_size, backend="torch-eager", progress=progress)
    prior_new, iterations = A.em_prior(probs, source)
    shift = float(A.logit(prior_new) - A.logit(source))
    name, last = _last_linear(model)
    with torch.no_grad():
        last.bias[1] += shift  # softmax over two logits: P(atypical) = sigmoid(z1 - z0 + shift)

    state = payload["state_dict"]
    for key, value in model.state_dict().items():
        if key in state:
            state[key] = value.detach().cpu().clone()
    old_threshold = float(payload["threshold"])
    payload["threshold"] = A.shifted_threshold(old_threshold, source, prior_new)
    record = {
        "target": [os.path.abspath(f) for f in folders], "n": int(len(images)),
        "method": "AdaBN + prior EM" + (" + TENT" if use_tent else ""),
        "bn_layers_updated": len(updated), "bn_layers": len(A.batch_norms(model)),
        "prior_old": source, "prior_old_from": source_where, "prior_new": prior_new, "em_iterations": iterations,
        "mean_p_atypical_adabn": float(np.mean(probs)), "logit_shift": shift, "bias_changed": f"{name}.bias[1]",
        "threshold_old": old_threshold, "threshold_new": payload["threshold"], "tent": bool(use_tent),
    }
    if use_tent:
        record["tent_settings"] = {"epochs": TENT_EPOCHS, "lr": TENT_LR, "mean_entropy": entropy,
                                   "parameters": "batch-norm weight and bias"}
    # References fitted on the source's validation figures through the old statistics (conformal scores,
    # the shift score's feature reference): they no longer describe this network, so they are dropped
    removed = [key for key in STALE if key in payload]
    for key in removed:
        payload.pop(key)
    if removed:
        record["removed"] = [f"{key} (fitted before adaptation; re-run mitotype calibrate to refit it)"
                             for key in removed]
    if payload.get("adaptation"):
        record["earlier"] = payload["adaptation"]
    payload["adaptation"] = record
    write_payload(out, payload)
    check = predict_proba([load_model(out)], images[:32], batch_size=batch_size, backend="torch-eager")
    if not np.allclose(check, A.reweight(probs[:32], source, prior_new), atol=1e-4):
        raise MitotypeError(f"{out}: the adapted model does not reproduce the adapted probabilities")
    return {**record, "warnings": warnings}
