"""bench.timing: medians of timed calls (on a fake clock), the rows they make."""

from __future__ import annotations

from mitotype.bench import timing


def test_time_call_takes_the_median_of_the_timed_runs_without_the_warmup(monkeypatch):
    """Runs of 1, 9, 2, 8, 3 s after a 100 s warm-up: the median is 3 (the mean would be 4.6, and 23.3
    with the warm-up); CPU seconds likewise."""
    durations = iter([100, 1, 9, 2, 8, 3])
    clock = {"wall": 0.0, "cpu": 0.0}

    def call():
        step = next(durations)
        clock["wall"] += step
        clock["cpu"] += step / 2

    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(timing.time, "process_time", lambda: clock["cpu"])
    result = timing.time_call(call, min_runs=5, min_seconds=0, warmup=1)
    assert result == {"wall": 3.0, "cpu": 1.5, "runs": 5}


def test_time_call_runs_until_min_seconds_up_to_max_runs(monkeypatch):
    clock = {"wall": 0.0}

    def call():
        clock["wall"] += 0.25

    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["wall"])
    assert timing.time_call(call, min_runs=2, min_seconds=1.0, warmup=0)["runs"] == 4
    assert timing.time_call(call, min_runs=2, min_seconds=100.0, warmup=0, max_runs=7)["runs"] == 7


def test_rows_divide_patches_by_the_timing():
    t = {"wall": 0.5, "cpu": 0.25, "runs": 3}
    r = timing.row("inference", "x", 1, 64, t, ratio=1.0)
    assert (r["patches_per_s"], r["ms_per_batch"], r["patches_per_cpu_s"], r["ratio"]) == (128.0, 500.0, 256.0, 1.0)
    e = timing.e2e_row("predict", 1, 64, 1000, {"wall": 2.0, "cpu": 4.0, "runs": 1})
    assert (e["section"], e["patches_per_s"], e["patches_per_cpu_s"], e["seconds"]) == ("e2e", 500.0, 250.0, 2.0)


def test_timed_command_reports_a_failing_command(tmp_path):
    import os

    import pytest

    with pytest.raises(RuntimeError, match="no-such-command"):
        timing.timed_command(["no-such-command"], dict(os.environ))
    t = timing.timed_command(["--help"], dict(os.environ))
    assert t["wall"] > 0 and t["runs"] == 1


def test_peak_rss_is_this_process():
    assert 1 < timing.peak_rss_mib() < 1e6
