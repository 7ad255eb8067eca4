"""Train a single- or multi-task model from a YAML config (Lightning).

Examples:
  mitotype train --config configs/cpu_mtl.yaml --data amibr:../shared/data/amibr:split=train
  mitotype train --config configs/cpu_stl.yaml --data amibr:DATA:split=train train.epochs=2 \\
      model.segmentation.enabled=false --out runs/quick
  mitotype train --resume --out runs/quick            # continue an interrupted run

The run folder (--out) gets model.pt (weights, config, tuned threshold), config.yaml (resolved),
run.json (data spec, git commit, versions, timings), metrics.csv and curves.png (per epoch),
val_metrics.json and checkpoints/ (best.ckpt, last.ckpt). Without --val, a slide-grouped stratified
part of the training data (train.val_fraction) is held out for early stopping, checkpoint choice and
threshold tuning. Multi-GPU / multi-node: see docs/TRAINING.md (train.devices, train.strategy,
train.num_nodes; launch with torchrun or srun).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="run config (sections model/augment/train; see configs/). Required for a new run; "
                             "with --resume the run folder's config.yaml is used")
    parser.add_argument("--data", metavar="SPEC",
                        help="training data spec, e.g. amibr:../shared/data/amibr:split=train, folder:DIR, "
                             "manifest:CSV, midog25:CSV:IMAGEDIR, joined with '+'. With --resume: the run's own")
    parser.add_argument("--val", metavar="SPEC",
                        help="validation data spec (default: a slide-grouped part of --data, train.val_fraction)")
    parser.add_argument("--out", metavar="RUN_DIR",
                        help="run folder (default: runs/<config name>-<UTC timestamp>); must be new unless "
                             "--resume")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoints/last.ckpt (same config and data; "
                             "train.epochs may be raised to extend a finished run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch jobs)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides with dotted keys, e.g. train.epochs=2 "
                             "model.segmentation.enabled=false train.devices=4 train.strategy=ddp")


def run(args: argparse.Namespace) -> int:
    import os
    from datetime import datetime

    from mitotype.config import load_config
    from mitotype.errors import MitotypeError
    from mitotype.io import check_output_dir

    config_path, data, val = args.config, args.data, args.val
    if args.resume:
        if not args.out:
            raise MitotypeError("--resume needs --out RUN_DIR (the run folder to continue)")
        from mitotype.train.resume import resume_inputs

        config_path, data, val = resume_inputs(Path(args.out), config_path, data, val)
    if config_path is None or data is None:
        raise MitotypeError("a new run needs --config FILE.yaml and --data SPEC (see mitotype train --help)")
    if args.out:
        out = check_output_dir(args.out)
    else:
        # Lightning's DDP launcher re-runs this command in child processes with our environment: they must
        # pick the same folder, not one with their own timestamp.
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        default = str(Path("runs") / f"{Path(config_path).stem}-{stamp}")
        out = check_output_dir(os.environ.setdefault("MITOTYPE_RUN_DIR", default))
    cfg = load_config(config_path, args.overrides)

    from mitotype.train.run import train

    model_path = train(cfg, data, out, val_spec=val, resume=args.resume, progress=not args.no_progress)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # DDP: the other processes say nothing; rank 0 reports the run
        return 0
    print(f"model: {model_path}")
    metrics = out / "val_metrics.json"
    if metrics.is_file():
        tuned = json.loads(metrics.read_text())["tuned"]
        print(f"validation: balanced accuracy {tuned['balanced_accuracy']:.3f} at threshold "
              f"{tuned['threshold']:.3f}, AUROC {tuned['auroc']:.3f} (n={tuned['n']})")
    return 0
