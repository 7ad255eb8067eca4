"""train/resume: the one list of settings a run may change (experiment staleness and --resume)."""

from __future__ import annotations

import pytest
import yaml

from mitotype.config import load_config
from mitotype.errors import MitotypeError
from mitotype.train import resume


def test_hardware_changes_are_not_config_changes_but_the_model_is():
    saved = load_config(None).to_dict()
    new = load_config(None, ["train.threads=3", "train.num_workers=1", "train.precision=bf16"]).to_dict()
    assert resume.config_diff(saved, new, resume.HARDWARE_KEYS) == []
    new = load_config(None, ["train.threads=3", "train.lr=0.5"]).to_dict()
    assert resume.config_diff(saved, new, resume.HARDWARE_KEYS) == [f"train.lr: {saved['train']['lr']!r} -> 0.5"]


def test_resume_may_extend_a_run_but_not_change_its_precision(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(load_config(None).to_dict()))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    resume.check_resume(load_config(None, ["train.epochs=99", "train.threads=1"]), "d", None, tmp_path)
    with pytest.raises(MitotypeError, match="train.precision"):
        resume.check_resume(load_config(None, ["train.precision=bf16"]), "d", None, tmp_path)
