"""Run by tests/train/test_ddp.py as a script: Lightning's DDP launcher re-runs this file in each process.

    python tests/train/ddp_script.py TRAIN_SPEC VAL_SPEC OUT_DIR [key=value ...]

Trains through ``mitotype.train.run.train`` with one extra callback that writes, per rank, the training
figures (dataset indices) each epoch's batches held: ``OUT_DIR/seen_rank{r}.json``.
"""

import json
import sys
from pathlib import Path

import lightning as L

from mitotype.config import load_config
from mitotype.train.run import train

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cpu_mtl.yaml"


class SeenFigures(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.seen = out, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen += batch["index"].tolist()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        path = self.out / f"seen_rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"world_size": trainer.world_size, "seen": self.seen}))


def main() -> None:
    spec, val_spec, out, *overrides = sys.argv[1:]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIG, overrides)
    train(cfg, spec, out, val_spec=val_spec, callbacks=[SeenFigures(out)], progress=False)


if __name__ == "__main__":
    main()
