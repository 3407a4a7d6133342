"""The job-cost table (reid.report.benchmarks) from benchmark files in Snakemake's own format."""

from __future__ import annotations

import pytest

from reid.report.benchmarks import read_benchmark, write_table
from reid.report.runs import ReportInputError


def snakemake_benchmark(path, *records):
    """Write ``records`` ((seconds, max_rss MiB or None, cpu seconds), ...) as Snakemake itself writes them."""
    from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

    out = []
    for seconds, rss, cpu in records:
        r = BenchmarkRecord(running_time=seconds)
        if rss is not None:  # a job that ended before the first sample has no data: NA columns
            r.max_rss, r.max_vms, r.max_uss, r.max_pss, r.io_in, r.io_out = rss, rss, rss, rss, 0.0, 0.0
            r.cpu_time, r.data_collected = cpu, True
        out.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark_records(out, str(path), False)
    return path


def test_a_table_of_wall_time_peak_memory_and_cpu_time_per_job(tmp_path):
    root = tmp_path / "benchmarks"
    train = snakemake_benchmark(root / "train/synthetic/baseline-seed0.tsv", (125.5, 1536.2, 240.0))
    short = snakemake_benchmark(root / "evaluate/synthetic/baseline-seed0.tsv", (0.8, None, None))
    repeated = snakemake_benchmark(root / "extract/synthetic/mutual-seed0.tsv", (10.0, 800.0, 9.0), (20.0, 900.0, 11.0))
    older = root / "train/synthetic/mutual-seed0.tsv"  # a job that ran before benchmarks were recorded
    md, html = tmp_path / "t.md", tmp_path / "t.html"
    assert write_table([str(train), str(short), str(repeated), str(older)], root, md, html) == [md, html]
    text = md.read_text()
    assert "| train | synthetic/baseline-seed0 | 125.5 | 1,536 | 240.0 |" in text
    assert "| evaluate | synthetic/baseline-seed0 | 0.8 | – | – |" in text  # not sampled: a dash, not 0
    # repetitions: mean wall and CPU time, the largest peak
    assert "| extract | synthetic/mutual-seed0 | 15.0 | 900 | 10.0 |" in text
    assert "| train | synthetic/mutual-seed0 | – | – | – |" in text
    assert "Total wall time: 141.3 s." in text
    assert "<td>synthetic/baseline-seed0</td><td>125.5</td><td>1,536</td>" in html.read_text()


def test_a_file_that_is_not_a_benchmark_is_named_and_nothing_is_written(tmp_path):
    root = tmp_path / "benchmarks"
    good = snakemake_benchmark(root / "train/d/m-seed0.tsv", (1.0, 10.0, 1.0))
    bad = root / "train/d/x-seed0.tsv"
    bad.write_text("s\th:m:s\tmax_rss\tcpu_time\nabc\t0:00:01\t1\t1\n")
    with pytest.raises(ReportInputError, match=r"x-seed0\.tsv: line 2, column 's': 'abc' is not a number"):
        write_table([str(good), str(bad)], root, tmp_path / "t.md", None)
    assert not (tmp_path / "t.md").exists()
    (root / "train/d/empty.tsv").write_text("")
    with pytest.raises(ReportInputError, match=r"empty\.tsv: not a Snakemake benchmark file"):
        read_benchmark(root / "train/d/empty.tsv", root)
    with pytest.raises(ReportInputError, match=r"not under .* \(the benchmark folder\)"):
        read_benchmark(good, tmp_path / "elsewhere")
