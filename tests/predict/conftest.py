"""A small real model file, built once per test session (no training, no downloads).

A small timm MobileNetV3 with every dense head, reading 128 px crops and resizing them to a 64 px input
(which also exercises the crop-to-input resize), keeps the tests fast on 2 CPU cores. Randomly
initialised, such a network gives nearly the same output for every input
(its activations shrink layer by layer under default batch-norm statistics), which would make
agreement tests trivially true. So the batch-norm statistics are recomputed on real AMi-Br crops, and the
threshold is set to the median P(atypical) of the 16 pages of the MIDOG25 track-2 example stack: the model
then separates inputs and calls half of that stack atypical -- enough to test the plumbing (both classes
occur), not a useful classifier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

AMIBR_SAMPLE = 48  # crops for the batch-norm statistics and the threshold


def amibr_pngs(amibr_root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` AMi-Br crops, both classes, fixed choice."""
    files = sorted((amibr_root / "patches" / "atypical").glob("*.png"))[: n // 2]
    files += sorted((amibr_root / "patches" / "normal").glob("*.png"))[: n - len(files)]
    rng = np.random.default_rng(seed)
    return [files[i] for i in rng.permutation(len(files))]


def normalise(images: np.ndarray, model_cfg):
    """As prediction prepares crops (models.inference.preprocess), in the default memory layout."""
    from mitotype.models.inference import preprocess

    return preprocess(images, model_cfg.crop_size, model_cfg.input_size, model_cfg.mean, model_cfg.std).contiguous()


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, amibr_root, track2_root) -> Path:
    import torch
    from PIL import Image

    from mitotype.config import RunConfig
    from mitotype.data.images import read_rgb
    from mitotype.models import create_model
    from mitotype.models.modelfile import save_model

    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.model.encoder = "mobilenetv3_small_050"
    cfg.model.pretrained = False
    cfg.model.input_size = 64
    for task in (cfg.model.segmentation, cfg.model.pixel_classes, cfg.model.localisation):
        task.enabled = True
    model = create_model(cfg.model)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in amibr_pngs(amibr_root, AMIBR_SAMPLE)])
    x = normalise(images, cfg.model)
    for module in model.modules():  # cumulative averages over the whole sample
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in x.split(16):
            model(batch, dense=False)
    model.eval()
    pages = np.stack([read_rgb(track2_root / "input" / "stack_5.tiff", page=i) for i in range(16)])
    probs = model.predict_proba(normalise(pages, cfg.model)).numpy()
    path = tmp_path_factory.mktemp("model") / "small.pt"
    save_model(path, model, cfg, threshold=float(np.median(probs)), extra={"purpose": "tests/predict"})
    return path


@pytest.fixture(scope="session")
def small_loaded(small_model):
    from mitotype.models.modelfile import load_model

    return load_model(small_model)
