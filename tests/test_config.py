"""Run configuration: YAML files <-> typed dataclasses, overrides, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from mitotype.config import (
    ModelConfig,
    RunConfig,
    config_from_dict,
    load_config,
    parse_overrides,
    read_yaml,
)
from mitotype.errors import MitotypeError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def test_defaults_without_a_file():
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.model.dense_tasks == []  # the default network is the single-task baseline


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_loads_and_round_trips(path):
    cfg = load_config(path)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_shipped_configs_differ_only_where_they_say():
    mtl, stl = load_config(REPO / "configs/cpu_mtl.yaml"), load_config(REPO / "configs/cpu_stl.yaml")
    assert mtl.model.dense_tasks == ["segmentation", "pixel_classes", "localisation"]
    assert stl.model.dense_tasks == []
    assert mtl.model.encoder == stl.model.encoder and mtl.augment == stl.augment
    assert load_config(REPO / "configs/paper.yaml").model.encoder == "resnetv2_50"


def test_overrides_are_yaml_values_in_dotted_keys():
    assert parse_overrides(["train.epochs=3", "model.segmentation.enabled=false", "model.weights=null"]) == {
        "train": {"epochs": 3},
        "model": {"segmentation": {"enabled": False}, "weights": None},
    }
    cfg = load_config(REPO / "configs/cpu_mtl.yaml", ["train.epochs=2", "model.head_hidden=[64]"])
    assert cfg.train.epochs == 2 and cfg.model.head_hidden == (64,)
    assert cfg.model.segmentation.enabled  # untouched keys keep the file's values


def test_task_shorthand_then_details(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  segmentation: true\n")
    cfg = load_config(path, ["model.segmentation.weight=0.2"])
    assert cfg.model.segmentation.enabled and cfg.model.segmentation.weight == 0.2


def test_ints_become_floats_and_lists_become_tuples():
    cfg = config_from_dict({"train": {"lr": 1}, "augment": {"affine_scale": [1, 2]}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.augment.affine_scale == (1.0, 2.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trian": {}}, "unknown key(s) ['trian']"),
        ({"train": {"epoch": 3}}, "unknown key(s) ['epoch']"),
        ({"train": {"epochs": "ten"}}, "config.train.epochs: expected int"),
        ({"train": {"epochs": True}}, "config.train.epochs: expected int"),
        ({"train": {"epochs": 2.5}}, "config.train.epochs: expected int"),
        ({"train": {"channels_last": "yes"}}, "config.train.channels_last: expected true/false"),
        ({"train": {"lr": None}}, "config.train.lr: may not be null"),
        ({"model": {"weights": 5}}, "config.model.weights: expected str"),
        ({"model": {"head_hidden": 512}}, "config.model.head_hidden: expected a list"),
        ({"model": {"head_hidden": [512, "wide"]}}, "config.model.head_hidden: expected int"),
        ({"model": {"mean": [0.5, 0.5]}}, "config.model.mean: expected 3 values, got 2"),
        ({"model": {"segmentation": [1]}}, "config.model.segmentation: expected a mapping"),
        ({"model": {"segmentation": {"weigth": 1}}}, "unknown key(s) ['weigth']"),
        ({"model": 3}, "config.model: expected a mapping"),
        ({"model": {"decoder_channels": [], "localisation": True}}, "model.decoder_channels must hold at least one"),
        ({"model": {"decoder_channels": [64, 0]}}, "model.decoder_channels must be >= 1, got [64, 0]"),
        ({"model": {"shared_decoder": "yes"}}, "config.model.shared_decoder: expected true/false"),
        # fixed choices (Literal fields) fail as the config is read, naming every allowed value
        ({"train": {"schedule": "cosin"}}, "config.train.schedule: must be one of cosine, onecycle, got 'cosin'"),
        ({"model": {"heatmap_loss": 1}}, "config.model.heatmap_loss: must be one of mse, focal, got 1"),
        ({"augment": {"stain_normalise": "macenco"}},
         "config.augment.stain_normalise: must be one of macenko, reinhard or null, got 'macenco'"),
        ({"train": {"precision": "bf15"}}, "config.train.precision: must be one of auto, 32,"),
    ],
)
def test_bad_values_are_named(data, message):
    with pytest.raises(MitotypeError) as info:
        config_from_dict(data)
    assert message in str(info.value)


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(MitotypeError, match="typo.yaml.train: unknown key"):
        load_config(path)
    with pytest.raises(MitotypeError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(MitotypeError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(MitotypeError, match="expected KEY=VALUE"):
        load_config(None, ["train.epochs"])


def test_empty_file_is_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert read_yaml(path, "config file") == {}
    assert load_config(path) == RunConfig()


def test_dense_tasks_follow_the_switches():
    model = config_from_dict({"model": {"localisation": True, "segmentation": {"enabled": True}}}).model
    assert model.dense_tasks == ["segmentation", "localisation"]
    assert ModelConfig().dense_tasks == []


def test_values_that_may_take_two_types():
    # The documented multi-GPU command: train.devices=4 (Lightning also takes "auto" or "0,1").
    assert load_config(None, ["train.devices=4"]).train.devices == 4
    assert load_config(None, ["train.devices=0,1"]).train.devices == "0,1"
    assert load_config(None, ["train.max_train_batches=null"]).train.max_train_batches is None
    with pytest.raises(MitotypeError, match="train.devices: expected str or int, got 1.5"):
        load_config(None, ["train.devices=1.5"])


def test_every_literal_field_takes_each_of_its_choices_and_the_monitors_have_a_direction():
    import dataclasses
    from typing import Literal, get_args, get_origin, get_type_hints

    from mitotype.config import AugmentConfig, ModelConfig, TrainConfig
    from mitotype.train.run import MONITORS

    for section, cls in (("model", ModelConfig), ("augment", AugmentConfig), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            hint = get_type_hints(cls)[f.name]
            literal = next((a for a in (hint, *get_args(hint)) if get_origin(a) is Literal), None)
            for choice in get_args(literal) if literal else ():
                overrides = {"segmentation": True} if f.name == "mask_pooling" else {}
                cfg = config_from_dict({section: {f.name: choice, **overrides}})
                assert getattr(getattr(cfg, section), f.name) == choice
    assert set(MONITORS) == set(get_args(get_type_hints(TrainConfig)["monitor"]))
