"""Summarise or download data sets.

  mitotype data summary SPEC [--json]        counts per class, domain, group, split and source
  mitotype data download amibr --to DIR      fetch AMi-Br from GitHub, unpack, verify
  mitotype data download amibr --to DIR --archive AMi-Br-main.zip    the same, offline

SPEC is a data-set spec: READER:ARG[:ARG][:KEY=VALUE], several joined with '+', e.g.
  amibr:../shared/data/amibr            amibr:../shared/data/amibr:split=train
  amibr:DIR:domain=source               midog25:MIDOG25_labels.csv:IMAGEDIR[:domain=tumor|scanner|lab|species]
  folder:ROOT  (ROOT/Atypical, ROOT/Normal)   manifest:CSV (path,label[,domain,group])
  stack:FILE_OR_DIR[:gt=ground_truth.json]
See docs/DATA.md.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    summary = sub.add_parser("summary", help="counts per class, domain, group and split of a data-set spec",
                             description="Counts per class, domain, group, split and source. The text table "
                             "leaves out the per-group listing; --json includes it.")
    summary.add_argument("spec", metavar="SPEC", help="data-set spec, e.g. amibr:../shared/data/amibr:split=train")
    summary.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    summary.add_argument("--out", metavar="FILE", help="also write the JSON summary to FILE")

    download = sub.add_parser("download", help="download a public data set and verify it",
                              description="Download AMi-Br (github.com/DeepMicroscopy/AMi-Br, archive of the "
                              "default branch) and its published train split (github.com/DeepMicroscopy/"
                              "AMi-Br_Benchmark), unpack into DIR and verify: CSV present, PNG count equals "
                              "CSV rows, every PNG decodes. Offline: download the archive elsewhere and pass "
                              "it with --archive.")
    download.add_argument("dataset", choices=["amibr"], help="the data set to fetch (only amibr is public)")
    download.add_argument("--to", required=True, metavar="DIR", help="folder to unpack into (created)")
    download.add_argument("--archive", metavar="ZIP",
                          help="an already-downloaded AMi-Br repository zip: no download (the offline route)")
    download.add_argument("--split-csv", metavar="CSV",
                          help="a local amibr_train_split.csv, instead of fetching it from AMi-Br_Benchmark")
    download.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "summary":
        return _summary(args)
    return _download(args)


def _summary(args: argparse.Namespace) -> int:
    import json

    from mitotype.data.spec import load_figures
    from mitotype.data.summary import format_summary, summarise
    from mitotype.io import check_output_file, write_json

    if args.out:
        check_output_file(args.out)
    summary = summarise(load_figures(args.spec))
    summary = {"spec": args.spec, **summary}
    if args.out:
        write_json(args.out, summary)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary), end="\n" if args.json else "")
    return 0


def _download(args: argparse.Namespace) -> int:
    import json

    from mitotype.data.download import download_amibr
    from mitotype.io import check_output_dir

    check_output_dir(args.to, "--to")
    report = download_amibr(args.to, archive=args.archive, split_csv=args.split_csv,
                            progress=not args.no_progress)
    for warning in report.pop("warnings"):
        print(f"warning: {warning}")
    print(json.dumps(report, indent=2))
    print(f"AMi-Br is ready: use the spec amibr:{args.to}")
    return 0
