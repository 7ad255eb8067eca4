"""Shared by the experiment tests: a tiny real-data grid and a fake trainer that makes it run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.evaluate.test_run import tiny_model

REPO = Path(__file__).resolve().parents[2]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def grid(tmp_path, amibr_root):
    """Two configs x two seeds x (published split + 2-fold grouped CV) on 60 real AMi-Br figures, reached
    through a symbolic link (as users' data often are): every output must name the files the same way."""
    linked = tmp_path / "linked-amibr"
    linked.symlink_to(amibr_root.resolve(), target_is_directory=True)
    return write_yaml(tmp_path / "grid.yaml", {
        "name": "grid", "data": f"amibr:{linked}:domain=source", "subsample": 60, "seeds": [0, 1],
        "protocols": {"published": {}, "cv": {"kind": "kfold", "k": 2}},
        "configs": {"stl": {}, "mtl": {"overrides": ["model.segmentation.enabled=true"]}},
        "reference": "stl", "overrides": ["model.pretrained=false", "train.epochs=1"],
        "evaluate": {"n_boot": 50, "device": "cpu", "plots": False}})


class FakeTrainer:
    """Stands in for ``train.run.train``: an untrained tiny model per (config, seed), a checkpoint first,
    and an optional interruption, so that the runner's bookkeeping is tested in seconds."""

    def __init__(self, interrupt: str | None = None):
        self.calls: list[tuple[str, bool]] = []
        self.interrupt = interrupt

    def __call__(self, cfg, data_spec, out_dir, val_spec=None, resume=False, **kwargs):
        from mitotype.data.images import load_images
        from mitotype.data.spec import load_figures
        from mitotype.models.inference import predict_proba
        from mitotype.models.modelfile import LoadedModel, save_model

        out_dir = Path(out_dir)
        self.calls.append((str(out_dir), resume))
        assert data_spec.startswith("manifest:")
        figures = load_figures(data_spec)  # the train part, readable
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out_dir / "checkpoints" / "last.ckpt").write_text("checkpoint")
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        if self.interrupt and self.interrupt in str(out_dir) and not resume:
            raise KeyboardInterrupt
        seed = cfg.train.seed + 10 * cfg.model.segmentation.enabled
        cfg.model.encoder, cfg.model.input_size, cfg.model.head_hidden = "resnet18", 32, ()
        images = load_images(figures[:32], 128)
        model = tiny_model(cfg, images, seed)
        # threshold: the median P(atypical) on the train part, so that both classes are predicted
        threshold = float(np.median(predict_proba([LoadedModel(model, cfg, 0.5)], images)))
        return save_model(out_dir / "model.pt", model, cfg, threshold=threshold)
