"""The experiment file: validation, the bundled files, and what a config name means for one run."""

from __future__ import annotations

import pytest

from mitotype.errors import MitotypeError
from mitotype.experiment.spec import load_experiment
from tests.experiment.conftest import REPO, write_yaml


def test_bundled_experiment_files_are_valid(amibr_root):
    exp = load_experiment(REPO / "experiments" / "amibr_mtl_vs_stl.yaml", data=f"amibr:{amibr_root}:domain=source")
    assert exp.seeds == [0, 1, 2] and set(exp.configs) == {"stl", "mtl"} and exp.reference == "stl"
    assert {p["kind"] for p in exp.protocols.values()} == {"published", "lodo"}
    smoke = load_experiment(REPO / "experiments" / "smoke.yaml")
    assert smoke.subsample and "train.max_train_batches=2" in smoke.overrides


def test_ablation_grid_switches_one_thing_per_config(amibr_root):
    from mitotype.experiment.spec import run_config

    exp = load_experiment(REPO / "experiments" / "amibr_ablation.yaml", data=f"amibr:{amibr_root}:domain=source")
    tasks = {name: run_config(exp, name, 0, []).model for name in exp.configs}
    assert tasks["stl"].dense_tasks == [] and tasks["seg"].dense_tasks == ["segmentation"]
    assert tasks["pix"].dense_tasks == ["pixel_classes"] and tasks["loc"].dense_tasks == ["localisation"]
    assert tasks["mtl"].dense_tasks == tasks["mtl_bgswap"].dense_tasks == tasks["mtl_maskpool"].dense_tasks
    assert tasks["mtl_bgswap"].background_swap.enabled and not tasks["mtl"].background_swap.enabled
    assert tasks["mtl_maskpool"].mask_pooling and not tasks["mtl"].mask_pooling


@pytest.mark.parametrize("change, message", [
    ({"protocols": {"x": {"kind": "bogus"}}}, "unknown kind"),
    ({"protocols": {"lodo": {"k": 3}}}, "unknown option"),
    ({"reference": "nope"}, "reference"),
    ({"configs": {"a": {"base": "no/such.yaml"}}}, "not found"),
    ({"seeds": "zero"}, "seeds"),
    ({"metrics": ["f1"]}, "metrics"),
    ({"typo": 1}, "unknown key"),
])
def test_bad_experiment_files(tmp_path, change, message):
    base = {"data": "amibr:x", "protocols": {"published": {}}, "configs": {"a": {}}}
    with pytest.raises(MitotypeError, match=message):
        load_experiment(write_yaml(tmp_path / "e.yaml", {**base, **change}))
