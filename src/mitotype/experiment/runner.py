"""Executing an experiment: each run trained and evaluated in its own folder (``execute_run``), resumed where
it stopped, its output copied into ``run.log``, progress in ``experiment.log``; and the whole command
(``run_experiment``: plan, run, tabulate)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mitotype import metrics as M
from mitotype.errors import MitotypeError
from mitotype.evaluate.report import fmt
from mitotype.experiment.last_epoch import write_last_epoch
from mitotype.experiment.plan import Run, load_data, plan_runs, run_state, write_manifest
from mitotype.experiment.spec import Experiment, eval_device, load_experiment, run_config
from mitotype.experiment.table import write_results
from mitotype.io import absolute_path, provenance, write_json
from mitotype.train.resume import config_changes, run_progress

_OWN_HANDLER_LOGGERS = ("lightning.pytorch", "lightning.fabric")


class _Tee(io.TextIOBase):
    """Writes to the run's log file and to the console."""

    def __init__(self, console, log_file):
        self.console, self.log_file = console, log_file

    def write(self, text: str) -> int:
        self.console.write(text)
        if not self.log_file.closed:  # a library may keep this stream after the run ended
            self.log_file.write(text)
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        if not self.log_file.closed:
            self.log_file.flush()

    def isatty(self) -> bool:  # no carriage-return progress bars into log files
        return False

    def fileno(self) -> int:  # for libraries that ask (faulthandler, subprocess): the console's
        return self.console.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", "utf-8")


@contextlib.contextmanager
def _logged(path: Path) -> Iterator[None]:
    """Copy stdout, stderr and logging records into ``path`` (appending) for the duration of one run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        # Lightning's loggers do not propagate to the root logger when it had no handler at import time.
        loggers = [logging.getLogger(name) for name in ("", *_OWN_HANDLER_LOGGERS)]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            with contextlib.redirect_stdout(_Tee(sys.stdout, fh)), contextlib.redirect_stderr(_Tee(sys.stderr, fh)):
                yield
        finally:
            for logger in loggers:
                logger.removeHandler(handler)


def _say(log_path: Path, text: str) -> None:
    """A progress line on the console and, time-stamped, in ``experiment.log``."""
    print(text, flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def execute_run(exp: Experiment, run: Run, figures: list, run_dir: Path, cli_overrides: Sequence[str] = ()
                ) -> dict[str, Any]:
    """Train on the run's train part, evaluate on its test part; resumable at both steps."""
    from mitotype.evaluate.run import evaluate
    from mitotype.train.run import train

    run_dir = Path(absolute_path(run_dir))  # the trainer's resume check compares the data spec verbatim
    state = run_state(run_dir)
    cfg = run_config(exp, run.config, run.seed, cli_overrides)
    train_figs = [figures[i] for i in run.train_idx]
    test_figs = [figures[i] for i in run.test_idx]
    write_manifest(run_dir / "train.csv", train_figs)
    write_manifest(run_dir / "test.csv", test_figs)
    t0 = time.time()
    train_dir = run_dir / "train"
    model_path = train_dir / "model.pt"
    progress = run_progress(train_dir)  # "finished" also when it stopped after the model file, before done.json
    if state != "trained" and progress != "finished":
        # The trainer resumes from its last checkpoint; without one (stopped in the first epoch) it restarts.
        resume = progress == "resumable"
        print(f"[{run.id}] training on {len(train_figs)} figures ({'resuming' if resume else 'from scratch'})")
        model_path = Path(train(cfg, f"manifest:{run_dir / 'train.csv'}", train_dir, resume=resume,
                                progress=False))
    if not (train_dir / "done.json").is_file():
        write_json(train_dir / "done.json", {"model": str(model_path), "seconds": round(time.time() - t0, 1)})
    t1 = time.time()
    ev = exp.evaluate
    result = evaluate([model_path], f"manifest:{run_dir / 'test.csv'}", run_dir / "eval", figures=test_figs,
                      tta=bool(ev.get("tta", False)), batch_size=int(ev.get("batch_size", 64)),
                      device=eval_device(exp, cfg), n_boot=int(ev.get("n_boot", 1000)),
                      seed=int(ev.get("seed", 0)), plots_and_report=bool(ev.get("plots", True)))
    status = {"run": run.id, "config": run.config, "protocol": run.protocol, "part": run.part,
              "test_set": run.test_set, "seed": run.seed, "n_train": len(train_figs), "n_test": len(test_figs),
              "train_seconds": json.loads((train_dir / "done.json").read_text())["seconds"],
              "eval_seconds": round(time.time() - t1, 1),
              **{k: result[k] for k in M.METRICS}}
    write_json(run_dir / "status.json", status)
    return status


def describe(exp: Experiment, runs: list[Run], out: Path) -> str:
    """The runs to do and the state of each, for the console."""
    lines = [(f"{len(runs)} runs ({len(exp.configs)} configs x {len(exp.seeds)} seeds x parts of "
              f"{len(exp.protocols)} protocols) in {out / 'runs'}:")]
    for run in runs:
        lines.append(f"  {run.id:48s} train {len(run.train_idx):5d}  test {len(run.test_idx):5d}  "
                     f"[{run_state(out / 'runs' / run.id)}]")
    return "\n".join(lines)


def run_experiment(path: str | Path, out_dir: str | Path | None = None, dry_run: bool = False,
                   overrides: Sequence[str] = (), data: str | None = None, only: str | None = None,
                   command: str | None = None, table_only: bool = False, reference: str | None = None,
                   last_epoch: bool = False) -> Path:
    """Run (or resume) every run of the experiment, then write the table; returns ``results.md``.

    ``overrides`` (``KEY=VALUE``) apply to every run after the experiment's own (e.g. ``train.accelerator=gpu``);
    ``only`` restricts this invocation to runs whose id contains it (the table still covers all finished runs).
    ``command``: the command line to print as "Reproduce" in results.md. ``table_only``: train nothing, only
    rewrite the table from the finished runs. ``reference``: take the paired differences against this config
    instead of the file's (e.g. each lever against the full multi-task model); the table is then written as
    ``results_vs_<reference>.md/.csv/.png`` beside the file's own. ``last_epoch``: also re-score every
    finished run at its last epoch into ``last_epoch.csv`` (``experiment.last_epoch``), with differences to the
    file's reference and to ``reference``.
    """
    exp = load_experiment(path, data=data)
    stem = "results"
    if reference is not None and reference != exp.reference:
        if reference not in exp.configs:
            raise MitotypeError(f"--reference {reference!r} is not one of the configs {list(exp.configs)}")
        stem = f"results_vs_{reference}"
    out = Path(out_dir) if out_dir else Path("runs") / "experiments" / exp.name
    for config in exp.configs:  # fail early on a bad config or override, before hours of training
        try:
            run_config(exp, config, exp.seeds[0], overrides)
        except MitotypeError as exc:
            raise MitotypeError(f"{exp.path}: config {config!r}: {exc}") from None
    figures = load_data(exp)
    runs = plan_runs(exp, figures)
    todo = [] if table_only else [r for r in runs if only is None or only in r.id]
    print(describe(exp, todo, out))
    if dry_run:
        return out / "results.md"
    if table_only and not any(run_state(out / "runs" / r.id) == "done" for r in runs):
        # most likely a mistyped --out: an empty table would look like an experiment that ran
        raise MitotypeError(f"{out}: no finished runs to tabulate ({len(runs)} planned); give the --out of an "
                            "experiment that ran, or run it first")
    if todo:
        from mitotype.config import check_accelerator

        for config in exp.configs:
            check_accelerator(run_config(exp, config, exp.seeds[0], overrides), f"{exp.path}: config {config!r}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", provenance(
        experiment=str(exp.path), data=exp.data, seeds=exp.seeds, protocols=exp.protocols, reference=exp.reference,
        configs={k: {"base": str(v["base"]) if v["base"] else None, "overrides": v["overrides"]}
                 for k, v in exp.configs.items()},
        overrides=exp.overrides, cli_overrides=list(overrides), evaluate=exp.evaluate, subsample=exp.subsample,
        n_figures=len(figures)))
    import mitotype.train.run  # noqa: F401 - Lightning binds its log handler to stderr at import: the real one

    t0, failed = time.time(), []
    log_path = out / "experiment.log"
    _say(log_path, f"experiment {exp.name}: {len(todo)} runs, out {out}")
    for i, run in enumerate(todo, 1):
        run_dir = out / "runs" / run.id
        if run_state(run_dir) == "done":
            stale = config_changes(run_dir / "train", run_config(exp, run.config, run.seed, overrides))
            _say(log_path, f"[{i}/{len(todo)}] {run.id}: done, skipped" + (
                f" -- WARNING: trained with another config ({stale}); delete {run_dir} to redo it" if stale else ""))
            continue
        _say(log_path, f"[{i}/{len(todo)}] {run.id}: start ({run_state(run_dir)})")
        try:
            with _logged(run_dir / "run.log"):
                status = execute_run(exp, run, figures, run_dir, overrides)
            _say(log_path, f"[{i}/{len(todo)}] {run.id}: balanced_accuracy {fmt(status['balanced_accuracy'])}, "
                           f"auroc {fmt(status['auroc'])}, train {status['train_seconds']} s, "
                           f"eval {status['eval_seconds']} s")
        except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid; it is reported
            failed.append(run.id)
            with (run_dir / "run.log").open("a") as fh:
                traceback.print_exc(file=fh)
            _say(log_path, f"[{i}/{len(todo)}] {run.id}: FAILED ({type(exc).__name__}: {exc}); "
                           f"see {run_dir / 'run.log'}")
    done = sum(run_state(out / "runs" / r.id) == "done" for r in runs)
    info = {"done": done, "total": len(runs), "failed": len(failed), "seconds": time.time() - t0,
            "command": command or f"run_experiment({str(path)!r}, out_dir={str(out)!r})"}
    table_exp = exp if stem == "results" else replace(exp, reference=reference)
    path = write_results(table_exp, runs, out, info, stem=stem)
    _say(log_path, f"{done}/{len(runs)} runs finished; table: {path}")
    if last_epoch:
        references = list(dict.fromkeys([exp.reference, *([reference] if reference else [])]))
        last = write_last_epoch(exp, runs, out, references, n_boot=int(exp.evaluate.get("n_boot", 1000)),
                                seed=int(exp.evaluate.get("seed", 0)))
        _say(log_path, f"last-epoch table: {last}")
    if failed:
        raise MitotypeError(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs in {out / 'runs'}); "
                            "rerun the same command to retry them")
    return path
