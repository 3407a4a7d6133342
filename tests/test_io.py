"""reid.io: a write either lands whole or leaves the previous file untouched."""

import json

import pytest
import torch

from reid import io


def test_write_json_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    io.write_json(target, {"b": 1, "a": [1, 2]})
    io.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert target.read_text().endswith("\n")
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_failed_write_keeps_previous_content(tmp_path):
    target = tmp_path / "model.pt"
    io.torch_save(target, {"w": torch.ones(3)})

    def broken(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.atomic_write(target, broken)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_commit_together_writes_all_files_in_order(tmp_path):
    a, b = tmp_path / "out" / "metrics.json", tmp_path / "out" / "per_query.csv"
    written = io.commit_together({a: io.json_writer({"mAP": 0.5}), b: io.text_writer("q,AP\n0,0.5\n")})
    assert written == [a, b]
    assert json.loads(a.read_text()) == {"mAP": 0.5} and b.read_text() == "q,AP\n0,0.5\n"
    assert sorted(p.name for p in a.parent.iterdir()) == ["metrics.json", "per_query.csv"]


def test_commit_together_failure_on_second_file_keeps_both_old_files(tmp_path):
    a, b = tmp_path / "metrics.json", tmp_path / "per_query.csv"
    io.commit_together({a: io.json_writer({"mAP": 1.0}), b: io.text_writer("old\n")})

    def disk_full(tmp):
        tmp.write_text("new, half")
        raise OSError(28, "No space left on device")

    with pytest.raises(io.WriteError, match=r"per_query\.csv: No space left on device") as err:
        io.commit_together({a: io.json_writer({"mAP": 0.05}), b: disk_full})
    assert err.value.errno == 28
    assert json.loads(a.read_text()) == {"mAP": 1.0} and b.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "per_query.csv"]


def test_commit_together_under_a_real_file_size_limit_names_the_file(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the large second file with EFBIG (errno 27)."""
    import subprocess
    import sys
    import textwrap

    a, b = tmp_path / "metrics.json", tmp_path / "per_query.csv"
    io.commit_together({a: io.json_writer({"mAP": 1.0}), b: io.text_writer("old\n")})
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from reid import io
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            io.commit_together({{{str(a)!r}: io.json_writer({{"mAP": 0.05}}),
                                 {str(b)!r}: io.text_writer("x" * 100000)}})
        except io.WriteError as err:
            print(err.errno, err)
            sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("27 ") and "per_query.csv" in done.stdout
    assert json.loads(a.read_text()) == {"mAP": 1.0} and b.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "per_query.csv"]


def test_single_file_write_error_names_the_file(tmp_path):
    def too_large(tmp):
        raise OSError(27, "File too large")

    with pytest.raises(io.WriteError, match=r"model\.pt: File too large"):
        io.atomic_write(tmp_path / "model.pt", too_large)
    assert list(tmp_path.iterdir()) == []


def test_committed_files_get_the_permissions_of_a_plain_write(tmp_path):
    """0666 less the umask, as open() gives, not mkstemp's 0600 (found: metrics.json, run.json, history.csv
    and the figures were private to their owner while model.pt and features.pt were not)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        io.write_json(tmp_path / "a.json", {"a": 1})
        io.commit_together({tmp_path / "b.txt": io.text_writer("b"), tmp_path / "c.txt": io.text_writer("c")})
        with io.atomic_path(tmp_path / "d.bin") as tmp:
            tmp.write_bytes(b"d")
        os.umask(0o077)
        io.write_text(tmp_path / "private.txt", "p")
    finally:
        os.umask(old)
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("plain.txt") == 0o644
    assert [mode(n) for n in ("a.json", "b.txt", "c.txt", "d.bin")] == [0o644] * 4
    assert mode("private.txt") == 0o600
