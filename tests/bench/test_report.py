"""bench.report: the table prints every row; the command parses."""

from __future__ import annotations

import pytest

from mitotype.bench import report
from mitotype.bench.timing import row


def test_table_prints_every_row():
    timing = {"wall": 0.5, "cpu": 0.25, "runs": 3}
    result = {"rows": [row("inference", "torch fp32 channels-last", 1, 64, timing, ratio=1.0),
                       {"section": "flops", "setting": "ours", "gflops_per_patch": 0.2}],
              "cpu": {"peak_formula": "2 cores x 2300 MHz x 64", "peak_gflops": 294.4},
              "model_source": "configs/cpu_mtl.yaml", "model": {"encoder": "tv_mobilenet_v2", "input_size": 128,
                                                                "tasks": []},
              "load_start": [1.0, 1.0, 1.0], "load_end": [1.0, 1.0, 1.0], "seconds": 1.0}
    text = report.table(result)
    assert "| inference | torch fp32 channels-last | 1 | 64 | 128.0 | 500.0 | 256.0 | 1.00 |" in text
    assert "| ours | 0.200 |" in text


def test_bench_command_help(capsys):
    from mitotype.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "--quick" in capsys.readouterr().out
