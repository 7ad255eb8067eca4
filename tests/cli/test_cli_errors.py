"""Regression tests for the examples of issue 17: each bad input gets a one-line error naming the file or
option, before any work is done -- never a traceback, never exit 0 with a partial or wrong result."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest

from mitotype.errors import MitotypeError
from tests.cli.conftest import ROOT, World, run_cli

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_CUDA = False


def refused(argv: list[str], *names: str) -> str:
    """Run ``mitotype ARGV``; assert a clean refusal (exit 2, one error line) naming every one of ``names``."""
    o = run_cli(argv)
    assert o.exception is None, o.exception
    assert o.rc == 2, (o.rc, o.err)
    last = o.err.strip().splitlines()[-1]
    assert last.startswith(f"mitotype {argv[0]}") and ": error: " in last, o.err
    assert "Traceback" not in o.err and "re-run with --debug" not in o.err, o.err
    for name in names:
        assert name in last, (name, last)
    return last


def no_inference():
    """Fails the test if a model ever runs: the checks must come first."""
    return mock.patch("mitotype.models.inference.predict_proba", side_effect=AssertionError("inference ran"))


# --- truncated TIFF stacks ----------------------------------------------------------------------------------

def test_predict_refuses_a_truncated_stack_naming_its_first_bad_page(world: World):
    last = refused(["predict", str(world.truncated_stack), "--model", str(world.model)], "truncated.tiff", "page 5")
    assert "5 complete page" in last


def test_challenge_refuses_a_truncated_stack(world: World, tmp_path):
    with no_inference():
        refused(["challenge", "--input", str(world.path("job_truncated")), "--output", str(tmp_path / "out"),
                 "--model", str(world.model)], "stack_0.tiff", "page 5")
    assert not (tmp_path / "out").exists()


def test_a_truncated_stack_is_not_a_shorter_data_set(world: World):
    refused(["data", "summary", f"stack:{world.truncated_stack}"], "truncated.tiff", "page 5")


def test_a_complete_stack_still_gives_every_page(world: World, tmp_path):
    out = tmp_path / "out"
    o = run_cli(["challenge", "--input", str(world.path("job_good")), "--output", str(out),
                 "--model", str(world.model)])
    assert o.rc == 0, o.err
    assert len(json.loads((out / "multiple-mitotic-figure-classification.json").read_text())) == 16


# --- numeric options ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-1", "0", "abc"])
def test_challenge_batch_size_must_be_positive(world: World, tmp_path, value):
    with no_inference():
        refused(["challenge", "--input", str(world.path("job_good")), "--output", str(tmp_path / "out"),
                 "--batch-size", value], "--batch-size")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value"), [("--threshold", "nan"), ("--threshold", "1.5"), ("--seed", "-1"),
                                               ("--n-boot", "-1"), ("--batch-size", "0")])
def test_evaluate_numeric_options_have_ranges(world: World, tmp_path, option, value):
    refused(["evaluate", "--model", str(world.model), "--data", f"folder:{world.folder}", "--out",
             str(tmp_path / "e"), option, value], option)


# --- output destinations ------------------------------------------------------------------------------------

def test_predict_out_that_is_a_folder_is_refused_before_inference(world: World, tmp_path):
    (tmp_path / "preds.csv").mkdir()
    with no_inference():
        refused(["predict", str(world.stack), "--model", str(world.model), "--out", str(tmp_path / "preds.csv")],
                "--out", "preds.csv", "is a folder")


def test_predict_out_under_a_regular_file_is_refused_before_inference(world: World):
    with no_inference():
        refused(["predict", str(world.stack), "--model", str(world.model), "--out",
                 str(world.path("a_file", "preds.csv"))], "a_file", "is a file")


def test_challenge_output_that_is_a_file_is_refused(world: World, tmp_path):
    (tmp_path / "out").write_text("x")
    with no_inference():
        refused(["challenge", "--input", str(world.path("job_good")), "--output", str(tmp_path / "out"),
                 "--model", str(world.model)], "--output", "not a folder")


def test_read_only_output_folder_is_refused_before_inference(world: World, tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        argv = ["predict", str(world.stack), "--model", str(world.model), "--out", str(readonly / "p.csv")]
        if ROOT:  # root writes through the permission bits: the probe says so, and the run succeeds
            assert run_cli(argv).rc == 0
        else:
            with no_inference():
                refused(argv, "ro", "not writable")
    finally:
        readonly.chmod(0o755)


def test_an_unwritable_folder_is_refused_even_where_permission_bits_say_nothing(world: World, tmp_path):
    """A read-only mount (or root's view of one): the write probe fails, so the check refuses."""
    with mock.patch("mitotype.io.tempfile.mkstemp", side_effect=PermissionError(13, "Permission denied")), \
            no_inference():
        refused(["evaluate", "--model", str(world.model), "--data", f"folder:{world.folder}", "--out",
                 str(tmp_path / "e")], "not writable")


def test_bench_out_is_checked_before_the_benchmarks(tmp_path):
    (tmp_path / "b.json").mkdir()
    refused(["bench", "--quick", "--out", str(tmp_path / "b.json")], "b.json")  # run_all is never reached


# --- configuration values -----------------------------------------------------------------------------------

def train_argv(world: World, tmp_path: Path, *overrides: str, config: Path | None = None) -> list[str]:
    return ["train", "--config", str(config or world.config), "--data", f"folder:{world.folder}", "--out",
            str(tmp_path / "run"), "--no-progress", *overrides]


@pytest.mark.parametrize(("override", "key"), [("train.lr=-0.001", "train.lr"), ("train.epochs=-1", "train.epochs"),
                                               ("train.epochs=0", "train.epochs"),
                                               ("train.batch_size=0", "train.batch_size"),
                                               ("train.lr=.nan", "train.lr"), ("train.val_fraction=1.5",
                                                                               "train.val_fraction"),
                                               ("train.devices=0", "train.devices")])
def test_config_values_out_of_range_are_refused_before_training(world: World, tmp_path, override, key):
    refused(train_argv(world, tmp_path, override), key)
    assert not (tmp_path / "run").exists()


def test_a_config_file_that_is_a_yaml_list_is_refused(world: World, tmp_path):
    refused(train_argv(world, tmp_path, "train.epochs=1", config=world.path("list.yaml")), "list.yaml", "mapping")


def test_a_malformed_override_is_refused_naming_it(world: World, tmp_path):
    last = refused(train_argv(world, tmp_path, "train.lr=[0.1"), "train.lr=[0.1", "not valid YAML")
    assert "\n" not in last


def test_a_yaml_syntax_error_is_one_line(world: World, tmp_path):
    refused(train_argv(world, tmp_path, config=world.path("broken.yaml")), "broken.yaml", "not valid YAML")


def test_lr_written_as_1e_minus_4_is_a_number(world: World, tmp_path):
    from mitotype.config import load_config

    assert load_config(world.config, ["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)
    o = run_cli(train_argv(world, tmp_path, "train.lr=1e-4"))
    assert o.started, o.err  # accepted: it got as far as Lightning's fit


def test_experiment_overrides_are_checked_before_the_plan(world: World, tmp_path):
    refused(["experiment", "--config", str(world.experiment), "--dry-run", "--out", str(tmp_path / "x"),
             "--set", "train.epochs=0"], "train.epochs")


def test_table_only_without_finished_runs_is_an_error(world: World, tmp_path):
    refused(["experiment", "--config", str(world.experiment), "--out", str(tmp_path / "x"), "--table-only"],
            "no finished runs")
    assert not (tmp_path / "x").exists()


# --- labels and folders -------------------------------------------------------------------------------------

def test_conflicting_labels_in_a_manifest_are_an_error(world: World):
    last = refused(["data", "summary", f"manifest:{world.path('manifest_conflict.csv')}"], "manifest_conflict.csv",
                   "lines 2 and 14", "conflicting labels")
    assert "atypical" in last and "normal" in last


def test_the_same_image_twice_with_one_label_is_counted_once_with_a_warning(world: World, tmp_path, caplog):
    rows = world.manifest.read_text().splitlines()
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join([*rows, rows[1]]).replace("labelled/", f"{world.root}/labelled/") + "\n")
    o = run_cli(["data", "summary", f"manifest:{twice}", "--json"])
    assert o.rc == 0 and json.loads(o.out)["n_figures"] == world.n_folder
    assert "1 of 13 listed figures are duplicates" in caplog.text


def _unlistable(path: Path):
    """os.scandir and os.listdir refuse ``path`` as they would for a folder without read permission."""
    real_scandir, real_listdir = os.scandir, os.listdir

    def denied(target):
        raise PermissionError(13, "Permission denied", str(target))

    def scandir(target="."):
        return denied(target) if Path(target) == path else real_scandir(target)

    def listdir(target="."):
        return denied(target) if Path(target) == path else real_listdir(target)
    return mock.patch.multiple(os, scandir=scandir, listdir=listdir)


def test_an_unreadable_sub_folder_is_an_error_not_skipped(world: World):
    closed = world.path("nested_unreadable", "closed")
    with _unlistable(closed), no_inference():
        refused(["predict", str(world.path("nested_unreadable")), "--model", str(world.model)], "closed",
                "cannot list")


def test_an_unreadable_folder_is_not_one_without_images(world: World):
    with _unlistable(world.path("unreadable_dir")), no_inference():
        last = refused(["predict", str(world.path("unreadable_dir")), "--model", str(world.model)], "unreadable_dir")
    assert "no images" not in last


def test_an_unreadable_class_folder_is_an_error(world: World):
    with _unlistable(world.path("labelled_closed", "Normal")):
        refused(["data", "summary", f"folder:{world.path('labelled_closed')}"], "Normal", "cannot list")


@pytest.mark.skipif(ROOT, reason="root lists folders without read permission")
def test_an_unreadable_sub_folder_for_real(world: World):
    refused(["predict", str(world.path("nested_unreadable")), "--model", str(world.model)], "closed")


def test_a_broken_link_in_a_folder_is_an_error(world: World):
    refused(["predict", str(world.path("links")), "--model", str(world.model)], "dangling.png")


# --- devices ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["predict", "evaluate", "challenge", "explain"])
def test_device_cuda_without_a_gpu_is_a_clear_error(world: World, tmp_path, command):
    argv = {"predict": ["predict", str(world.stack)],
            "evaluate": ["evaluate", "--data", f"folder:{world.folder}", "--out", str(tmp_path / "e")],
            "challenge": ["challenge", "--input", str(world.path("job_good")), "--output", str(tmp_path / "c")],
            "explain": ["explain", str(world.crops[0]), "--out", str(tmp_path / "x")]}[command]
    with no_inference():
        refused([*argv, "--model", str(world.model), "--device", "cuda"], "--device cuda", "no CUDA GPU")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_train_accelerator_gpu_without_a_gpu_is_a_clear_error(world: World, tmp_path):
    refused(train_argv(world, tmp_path, "train.accelerator=gpu"), "train.accelerator=gpu", "no CUDA GPU")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_a_gpu_experiment_can_be_planned_here_but_not_run(world: World, tmp_path):
    argv = ["experiment", "--config", str(world.experiment), "--out", str(tmp_path / "x"), "--set",
            "train.accelerator=gpu"]
    assert run_cli([*argv, "--dry-run"]).rc == 0
    refused(argv, "train.accelerator=gpu", "no CUDA GPU")
    assert not (tmp_path / "x").exists()


def test_an_unknown_device_is_a_clear_error(world: World):
    refused(["predict", str(world.stack), "--model", str(world.model), "--device", "tpu"], "--device", "tpu")


# --- the last net -------------------------------------------------------------------------------------------

def test_an_unexpected_error_is_one_line_with_a_hint_and_debug_shows_the_traceback(world: World, capsys):
    from mitotype.cli import INTERNAL_ERROR, main

    with mock.patch("mitotype.predict.run.predict", side_effect=ZeroDivisionError("boom")):
        assert main(["predict", str(world.stack)]) == INTERNAL_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "mitotype predict: error: unexpected ZeroDivisionError: boom" in err and "--debug" in err
        with pytest.raises(ZeroDivisionError):
            main(["predict", str(world.stack), "--debug"])
        with pytest.raises(ZeroDivisionError):
            main(["--debug", "predict", str(world.stack)])


def test_a_mitotype_error_stays_a_clean_message_with_exit_2(capsys):
    from mitotype.cli import main

    assert main(["predict", "no-such-file.png"]) == 2
    assert capsys.readouterr().err == "mitotype predict: error: no-such-file.png: no such file or folder\n"


def test_debug_also_shows_the_traceback_of_a_mitotype_error(capsys):
    from mitotype.cli import main

    assert main(["predict", "no-such-file.png", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and MitotypeError.__name__ in err
