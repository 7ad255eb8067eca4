"""One training run: data -> Lightning fit -> best checkpoint -> tuned threshold -> model file.

The run folder holds ``model.pt``, ``config.yaml`` (resolved), ``run.json`` (data spec, git commit,
versions, timings), ``metrics.csv`` and ``curves.png`` (per epoch), ``val_metrics.json`` and
``checkpoints/`` (``best.ckpt``, ``last.ckpt`` for ``--resume``).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mitotype.config import RunConfig
from mitotype.errors import MitotypeError
from mitotype.io import provenance, write_json, write_text
from mitotype.train.resume import check_resume

log = logging.getLogger(__name__)

# What ``precision: auto`` means on a CPU, measured on this project's 2-core machine (docs/TRAINING.md):
# bf16 autocast was slower than fp32 there, so auto keeps fp32 on CPUs.
CPU_AUTO_PRECISION = "32-true"


def uses_cuda(cfg: RunConfig) -> bool:
    return cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(cfg: RunConfig) -> str:
    """``auto`` -> bf16-mixed on GPUs that support it (else 16-mixed), CPU_AUTO_PRECISION on CPUs."""
    precision = cfg.train.precision
    if precision != "auto":
        return {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}.get(precision, precision)
    if uses_cuda(cfg):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return CPU_AUTO_PRECISION


MONITORS = {"val_bacc": "max", "val_auroc": "max", "val_loss": "min"}  # train.monitor -> better direction


def _callbacks(cfg: RunConfig, out_dir: Path, progress: bool) -> tuple[list, Any]:
    from lightning.pytorch.callbacks import (
        EarlyStopping,
        EMAWeightAveraging,
        ModelCheckpoint,
        ModelSummary,
        TQDMProgressBar,
    )

    from mitotype.train.callbacks import EpochHistory, RngState, TailAveraging

    monitor = cfg.train.monitor  # one of MONITORS: TrainConfig.monitor's Literal (tests/train/test_run.py)
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=monitor,
                                 mode=MONITORS[monitor], save_top_k=1, enable_version_counter=False)
    # save_last=True above would refresh last.ckpt only when the monitor improves: a second, unmonitored
    # checkpoint writes it after every epoch, so --resume loses at most the epoch in progress.
    last = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    callbacks: list = [checkpoint, last, EpochHistory(out_dir), RngState()]
    if progress:  # tqdm, like every other progress bar of mitotype
        callbacks += [TQDMProgressBar(), ModelSummary(max_depth=1)]
    if cfg.train.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode=MONITORS[monitor], check_finite=False,
                                       patience=cfg.train.early_stopping_patience))
    if cfg.train.ema_decay > 0:
        # Validation and checkpoints see the averaged weights (Lightning swaps them in).
        callbacks.append(EMAWeightAveraging(decay=cfg.train.ema_decay))
    if cfg.train.checkpoint == "swa":
        callbacks.append(TailAveraging(cfg.train.epochs, cfg.train.swa_epochs))
    return callbacks, checkpoint


def train(cfg: RunConfig, data_spec: str, out_dir: str | Path, val_spec: str | None = None,
          resume: bool = False, *, callbacks: list | None = None, progress: bool = True) -> Path:
    """Train one model; returns ``out_dir/model.pt``.

    ``resume`` continues from ``out_dir/checkpoints/last.ckpt`` (epoch, optimiser, schedule, EMA, history).
    ``callbacks`` are extra Lightning callbacks; ``progress`` switches the progress bar.
    """
    import lightning as L

    from mitotype.models.modelfile import save_model
    from mitotype.train.datamodule import FigureDataModule
    from mitotype.train.module import MitoModule, validation_metrics
    from mitotype.train.threshold import tune_threshold

    out_dir = Path(out_dir)
    last = out_dir / "checkpoints" / "last.ckpt"
    if resume:
        check_resume(cfg, data_spec, val_spec, out_dir)
    elif last.exists() or (out_dir / "model.pt").exists():
        raise MitotypeError(f"{out_dir}: already holds a run; pass --resume to continue it, or another --out")
    started = time.time()
    if cfg.train.threads > 0:  # on a CPU shared with other jobs one thread is much faster (docs/TRAINING.md)
        torch.set_num_threads(cfg.train.threads)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    precision = resolve_precision(cfg)

    data = FigureDataModule(cfg, data_spec, val_spec, progress=progress)
    data.setup("fit")
    module = MitoModule(cfg, class_weights=data.class_weights(), domain_weights=data.domain_weights())

    from lightning.pytorch.utilities import rank_zero_only

    main_process = rank_zero_only.rank == 0  # DDP: only rank 0 writes the run folder
    out_dir.mkdir(parents=True, exist_ok=True)
    if main_process:
        write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    run_info = provenance(data_spec=data_spec, val_spec=val_spec, data=data.summary, precision=precision)
    if resume and (out_dir / "run.json").is_file():  # keep a trace of every earlier session of this run
        earlier = json.loads((out_dir / "run.json").read_text())
        run_info["earlier_sessions"] = earlier.pop("earlier_sessions", []) + [
            {k: earlier.get(k) for k in ("time_utc", "argv", "git_commit", "epochs_run", "finished_utc")}]
    if main_process:
        write_json(out_dir / "run.json", run_info)

    run_callbacks, checkpoint = _callbacks(cfg, out_dir, progress)
    t = cfg.train
    on_cpu = not uses_cuda(cfg)
    trainer = L.Trainer(
        max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        num_nodes=t.num_nodes, precision=precision, callbacks=run_callbacks + list(callbacks or []),
        logger=False, default_root_dir=out_dir, limit_train_batches=t.max_train_batches or 1.0,
        num_sanity_val_steps=0, enable_progress_bar=progress, enable_model_summary=progress,
        deterministic="warn" if on_cpu else False, benchmark=False,
    )
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
    if trainer.interrupted:
        raise KeyboardInterrupt
    if not trainer.is_global_zero:  # DDP: rank 0 alone writes the model file
        return out_dir / "model.pt"

    # train.checkpoint: the validation pick (EMA weights if on), or the weights training ended with (the last
    # epoch's, or their tail average that TailAveraging copied in), validated with the classification path only.
    best = checkpoint.best_model_path or str(last)
    if cfg.train.checkpoint != "best":
        best, best_epoch = cfg.train.checkpoint, trainer.current_epoch - 1
    elif Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
        best_epoch = state.get("epoch")
    else:
        best_epoch = trainer.current_epoch - 1
    device = torch.device("cuda") if torch.cuda.is_available() and not on_cpu else torch.device("cpu")
    # the one inference path (models.inference), eager torch as the reference: the validation P(atypical)
    # the threshold is tuned on is what predict computes for these crops
    from mitotype.models.inference import predict_proba
    from mitotype.models.modelfile import LoadedModel

    probs = predict_proba([LoadedModel(module.model, cfg, 0.5)], data.val_set.images, batch_size=t.batch_size,
                          device=str(device), backend="torch-eager")
    labels = np.asarray(data.val_set.labels)
    try:
        threshold = tune_threshold(labels, probs)
    except MitotypeError as exc:  # e.g. a validation set with one class: keep the model, say so
        log.warning("threshold not tuned (%s); using 0.5", exc)
        threshold = 0.5
    val_metrics = {
        "tuned": validation_metrics(labels, probs, threshold),
        "at_0.5": validation_metrics(labels, probs, 0.5),
        "best_epoch": best_epoch, "checkpoint": Path(best).name, "data": data.summary["val"],
    }
    save_model(out_dir / "model.pt", module.model.cpu(), cfg, threshold, extra={
        "data_spec": data_spec, "val_spec": val_spec, "best_epoch": best_epoch,
        "val_balanced_accuracy": val_metrics["tuned"]["balanced_accuracy"],
        "val_auroc": val_metrics["tuned"]["auroc"], "git_commit": run_info.get("git_commit"),
    })
    write_json(out_dir / "val_metrics.json", val_metrics)
    rows = next((c.rows for c in run_callbacks if hasattr(c, "rows")), [])
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2 if sys.platform == "darwin" else 1024)
    run_info.update(
        finished_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), wall_seconds=round(time.time() - started, 1),
        epochs_run=trainer.current_epoch, best_epoch=best_epoch, threshold=threshold,
        seconds_per_epoch=[r["seconds"] for r in rows], peak_rss_mib=round(peak, 1),
    )
    write_json(out_dir / "run.json", run_info)
    return out_dir / "model.pt"
