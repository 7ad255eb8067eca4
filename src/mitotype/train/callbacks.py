"""Run-folder callbacks: per-epoch metrics (metrics.csv, curves.png) and random-generator state."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging

from mitotype.io import save_figure, write_text


class EpochHistory(L.Callback):
    """After each epoch (validation included) append one row of epoch-level metrics, then rewrite
    ``metrics.csv`` and ``curves.png`` atomically. The rows live in checkpoints, so ``--resume`` keeps them."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.rows: list[dict[str, Any]] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook, so val metrics are in callback_metrics.
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                               "seconds": round(time.perf_counter() - self._start, 2),
                               "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        for name, value in sorted(trainer.callback_metrics.items()):
            if name.endswith("_step"):
                continue
            row[name.removesuffix("_epoch")] = float(value)
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        self.write()

    def write(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        lines = [",".join(columns)]
        for row in self.rows:
            lines.append(",".join(_cell(row.get(c)) for c in columns))
        write_text(self.out_dir / "metrics.csv", "\n".join(lines) + "\n")
        plot_curves(self.rows, self.out_dir / "curves.png")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class RngState(L.Callback):
    """Keeps the torch / numpy / python random generators' states in every checkpoint and restores them on
    ``--resume``, so that the resumed epochs draw the same data order, augmentation, dropout and background
    swaps as an uninterrupted run (Lightning checkpoints do not hold them)."""

    # Plain types and tensors only: Lightning reads checkpoints with torch.load(weights_only=True).
    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        import numpy as np
        import torch

        if not state_dict:
            return
        torch.set_rng_state(state_dict["torch"])
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])



class TailAveraging(WeightAveraging):
    """Stochastic weight averaging over the tail of training (``train.checkpoint=swa``): the equal-weight mean
    of the weights and batch-norm buffers at the end of each of the last ``epochs`` epochs, which Lightning
    copies into the model when training ends. Validation sees the current weights until the first update
    (the base class would swap in the untouched initial copy), then the running average."""

    def __init__(self, total_epochs: int, epochs: int) -> None:
        super().__init__(use_buffers=True)
        self.first_epoch = total_epochs - epochs

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return epoch_idx is not None and epoch_idx >= self.first_epoch

    @property
    def n_averaged(self) -> int:
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.n_averaged:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.n_averaged:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.n_averaged:  # stopped early before the tail: the last weights stay
            super().on_train_end(trainer, pl_module)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plot_curves(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Loss parts (left) and validation balanced accuracy / AUROC (right) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] + 1 for r in rows]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    loss_keys = sorted({k for r in rows for k in r if k.startswith("train_") or k == "val_loss"})
    for key in loss_keys:
        values = [r.get(key, math.nan) for r in rows]
        ax_loss.plot(epochs, values, marker="o", ms=3, label=key, lw=2 if key in ("train_loss", "val_loss") else 1)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="losses (epoch means)")
    ax_loss.legend(fontsize=7)
    for key, label in (("val_bacc", "balanced accuracy (t=0.5)"), ("val_auroc", "AUROC")):
        ax_val.plot(epochs, [r.get(key, math.nan) for r in rows], marker="o", ms=3, label=label)
    ax_val.set(xlabel="epoch", ylabel="validation", title="validation", ylim=(0.4, 1.0))
    ax_val.legend(fontsize=8)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
