"""The table of an experiment's finished runs: predictions pooled per (test set, config, seed)
(``collect``, ``pooled_predictions``), mean and sd over seeds, paired differences to a reference config
(``paired_difference``), and results.md/.csv/.png (``tabulate``, ``write_results``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mitotype import metrics as M
from mitotype.errors import MitotypeError
from mitotype.experiment.plan import Run, run_state
from mitotype.experiment.spec import Experiment
from mitotype.io import atomic_write, write_text


def collect(runs: list[Run], runs_dir: Path) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """(test_set, config, seed) -> pooled predictions of its runs (k folds pooled into one), only where
    every run (fold) of that triple has finished."""
    import pandas as pd

    from mitotype.evaluate.run import read_predictions

    tables: dict[tuple[str, str, int], list] = {}
    need: dict[tuple[str, str, int], int] = {}
    for run in runs:
        key = (run.test_set, run.config, run.seed)
        need[key] = need.get(key, 0) + 1
        d = runs_dir / run.id
        if run_state(d) != "done":
            continue
        table = read_predictions(d / "eval" / "predictions.csv")
        table["threshold"] = json.loads((d / "eval" / "metrics.json").read_text())["threshold"]
        tables.setdefault(key, []).append(table)
    return {key: pooled_predictions(pd.concat(parts, ignore_index=True))
            for key, parts in tables.items() if len(parts) == need[key]}


def pooled_predictions(t) -> dict[str, np.ndarray]:
    """The arrays the table is computed from, sorted by figure, from a DataFrame with columns path, page,
    label, group, p_atypical and threshold (one row per test figure)."""
    import pandas as pd

    # identity of a figure: path and page (pandas' NA must not leak into the key: NA != NA)
    t = t.assign(key=[f"{path}#{'' if pd.isna(page) else int(page)}" for path, page in zip(t["path"], t["page"])])
    t = t.sort_values("key", kind="mergesort").reset_index(drop=True)
    return {"key": t["key"].to_numpy(), "labels": t["label"].to_numpy(np.int64),
            "probs": t["p_atypical"].to_numpy(float), "threshold": t["threshold"].to_numpy(float),
            "groups": t["group"].astype(str).to_numpy()}


def seed_metric(p: dict[str, np.ndarray], metric: str) -> float:
    """One metric of one seed's ``pooled_predictions`` (NaN where undefined)."""
    w = np.ones((1, len(p["labels"])))
    return float(M.weighted_metrics(p["labels"], p["probs"], p["threshold"], w)[metric][0])


def tabulate(exp: Experiment, runs: list[Run], runs_dir: Path, n_boot: int = 1000, seed: int = 0
             ) -> list[dict[str, Any]]:
    """One row per (test set, config, metric): mean and sd over seeds, the per-seed values, and the paired
    difference to the reference config (same seeds, same test figures) with a bootstrap 95% interval
    resampling the test set's groups (slides) and the seeds."""
    ready = collect(runs, runs_dir)
    rows = []
    test_sets = list(dict.fromkeys(r.test_set for r in runs))
    for test_set in test_sets:
        for config in exp.configs:
            seeds = [s for s in exp.seeds if (test_set, config, s) in ready]
            ref_seeds = [s for s in seeds if (test_set, exp.reference, s) in ready]
            for metric in exp.metrics:
                values = [seed_metric(ready[(test_set, config, s)], metric) for s in seeds]
                finite = [v for v in values if np.isfinite(v)]
                row = {"test_set": test_set, "config": config, "metric": metric, "n_seeds": len(seeds),
                       "n_test": len(ready[(test_set, config, seeds[0])]["labels"]) if seeds else 0,
                       "mean": float(np.mean(finite)) if finite else None,
                       "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                       "values": [None if not np.isfinite(v) else v for v in values],
                       "delta": None, "delta_ci_low": None, "delta_ci_high": None, "paired_seeds": 0,
                       "delta_values": []}
                if config != exp.reference and ref_seeds:
                    row.update(paired_difference(ready, test_set, config, exp.reference, ref_seeds, metric,
                                                 n_boot, seed))
                rows.append(row)
    return rows


def paired_difference(ready: dict[tuple[str, str, int], dict[str, np.ndarray]], test_set: str, config: str,
                      reference: str, seeds: list[int], metric: str, n_boot: int, seed: int) -> dict[str, Any]:
    """The table's difference columns for ``config`` against ``reference`` on one test set: the mean over
    ``seeds`` of metric(config) - metric(reference), the per-seed differences, and the 95% interval of
    ``metrics.paired_bootstrap`` (resampling the test set's slides and the seeds). ``ready`` maps
    (test_set, config, seed) to ``pooled_predictions``."""
    pairs = [(ready[(test_set, config, s)], ready[(test_set, reference, s)]) for s in seeds]
    first = pairs[0][0]
    for a, b in pairs:  # every seed of both configs on the same figures, in the same order
        if not all(np.array_equal(p[k], first[k]) for p in (a, b) for k in ("key", "labels")):
            raise MitotypeError(f"{test_set}: {config} and {reference} were tested on different figures; "
                                "delete the stale runs and rerun")
    result = M.paired_bootstrap(
        first["labels"], np.stack([a["probs"] for a, _ in pairs]), np.stack([b["probs"] for _, b in pairs]),
        np.stack([a["threshold"] for a, _ in pairs]), np.stack([b["threshold"] for _, b in pairs]),
        groups=first["groups"], metric=metric, n_boot=n_boot, seed=seed)
    ci = result["ci"]
    return {"delta": result["delta"], "delta_ci_low": None if ci is None else ci[0],
            "delta_ci_high": None if ci is None else ci[1], "paired_seeds": len(seeds),
            "delta_values": result["per_seed"]}


def _cell(row: dict[str, Any]) -> str:
    if row["mean"] is None:
        return "—"
    text = f"{row['mean']:.3f}" + (f" ± {row['sd']:.3f}" if row["sd"] is not None else "")
    if row["delta"] is not None:
        text += f" (Δ {row['delta']:+.3f} [{row['delta_ci_low']:+.3f}, {row['delta_ci_high']:+.3f}])"
    return text + f" n={row['n_seeds']}"


def results_markdown(exp: Experiment, rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    test_sets = list(dict.fromkeys(r["test_set"] for r in rows))
    out = [f"# Experiment {exp.name}", "",
           f"Data: `{exp.data}`; seeds {exp.seeds}; reference config: `{exp.reference}`.  ",
           ("Cells: mean ± sd over seeds (n = seeds finished); Δ = mean paired difference to the reference "
            "(same seeds, same test figures) with a 95% bootstrap interval resampling the test set's slides "
            "and the seeds (results.csv has the per-seed values and differences).  "),
           ("`kfold` pools the out-of-fold predictions of all folds per seed; `lodo:X` is trained without "
            "domain X and tested on X."), ""]
    for metric in exp.metrics:
        out += [f"## {metric}", "", "| config | " + " | ".join(test_sets) + " |",
                "|---|" + "---|" * len(test_sets)]
        for config in exp.configs:
            cells = [next((_cell(r) for r in rows if r["test_set"] == t and r["config"] == config
                           and r["metric"] == metric), "—") for t in test_sets]
            out.append(f"| {config} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["![results](results.png)", "", "## Runs", "",
            (f"{info['done']} of {info['total']} runs finished; {info['failed']} failed this time; "
             f"wall time of this invocation {info['seconds']:.0f} s."), "",
            f"Reproduce: `{info['command']}`", ""]
    return "\n".join(out)


def write_results(exp: Experiment, runs: list[Run], out: Path, info: dict[str, Any], stem: str = "results"
                  ) -> Path:
    """``stem``.md/.csv/.png in ``out``: the table of every finished run against ``exp.reference``."""
    import pandas as pd

    from mitotype.evaluate.plots import experiment_plot

    n_boot = int(exp.evaluate.get("n_boot", 1000))
    rows = tabulate(exp, runs, out / "runs", n_boot=n_boot, seed=int(exp.evaluate.get("seed", 0)))
    table = pd.DataFrame(rows)
    if not table.empty:
        for column in ("values", "delta_values"):  # per seed, in the order of the experiment's seeds
            table[column] = table[column].map(lambda v: ";".join("" if x is None else f"{x:.6f}" for x in v))
    with atomic_write(out / f"{stem}.csv", newline="") as fh:
        table.to_csv(fh, index=False)
    primary = exp.metrics[0]
    experiment_plot([r for r in rows if r["metric"] == primary], out / f"{stem}.png", metric=primary,
                    reference=exp.reference)
    path = out / f"{stem}.md"
    write_text(path, results_markdown(exp, rows, info))
    return path
