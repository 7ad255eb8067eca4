"""``mitotype experiment``: a grid of model configs x seeds x protocols, trained and evaluated run by run,
resumable, and tabulated at the end.

Where what is:

- ``spec``: the experiment YAML (``load_experiment`` -> ``Experiment``) and what a config name of it means
  for one run (``run_config``, ``eval_device``).
- ``plan``: the runs (``Run``, ``plan_runs``, ``protocol_parts``, ``subsample_figures``), the layout of
  ``--out`` (``Run.id``, ``run_state``) and the train/test manifests (``write_manifest``).
- ``runner``: executing the runs (``execute_run``), resuming, logs, and the command (``run_experiment``).
- ``recipe``: ``mitotype distil``: a teacher ensemble and its distilled, calibrated student from a recipe
  YAML (``load_recipe`` -> ``Recipe``, ``build``), step by step and resumable.
- ``table``: the table of the finished runs: pooled predictions, mean and sd over seeds, paired differences
  (``metrics.paired_bootstrap``), results.md/.csv/.png (``tabulate``, ``write_results``).
- ``last_epoch``: every finished run re-scored at its last epoch (``--last-epoch``, ``last_epoch.csv``).

An experiment YAML (see ``experiments/`` and docs/EVALUATION.md)::

    data: amibr:../shared/data/amibr:domain=source
    seeds: [0, 1, 2]
    protocols:                 # name -> options; ``kind`` defaults to the name
      published: {}            # the data set's own train/test split (AMi-Br)
      lodo: {by: source}       # leave one domain out (Figure.domain, or a Figure.meta key)
      kfold: {k: 5, split_seed: 0}
    configs:                   # name -> a base YAML (from configs/) plus overrides
      stl: {base: configs/cpu_stl.yaml}
      mtl: {base: configs/cpu_mtl.yaml, overrides: [model.segmentation.weight=0.5]}
    reference: stl             # paired differences are taken against this config
    overrides: [train.epochs=8]          # applied to every run
    evaluate: {n_boot: 1000, tta: false, batch_size: 128, device: auto, plots: true}
    metrics: [balanced_accuracy, auroc]  # tabulated; the first one is plotted
    subsample: null            # N: a fixed, label-stratified random subset of N figures (smoke tests)

Layout of ``--out``: ``runs/<config>/<protocol>/<part>/seed<k>/`` with ``train.csv`` / ``test.csv`` (the
manifests of the two parts), ``train/`` (``mitotype train`` outputs, ``model.pt``), ``eval/`` (``mitotype
evaluate`` outputs; ``last_epoch_p_atypical.csv`` after ``--last-epoch``), ``run.log`` and ``status.json``;
at the top ``experiment.log``, ``experiment.json``, ``results.md``, ``results.csv``, ``results.png``
(``results_vs_<config>.*`` with ``--reference``, ``last_epoch.csv`` with ``--last-epoch``).

Resuming: a run whose ``eval/metrics.json`` exists is skipped; a run with a finished training
(``train/done.json``) is only evaluated; any other run is trained again with ``resume=True`` (the trainer
continues from its last checkpoint where it has one).
"""

from mitotype.experiment.runner import run_experiment
from mitotype.experiment.spec import Experiment, load_experiment

__all__ = ["Experiment", "load_experiment", "run_experiment"]
