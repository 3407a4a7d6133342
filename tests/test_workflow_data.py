"""A failing re-run of a dataset rule, through `snakemake` as a user runs it: the last good dataset
and everything made from it survive (issue 11, kind 4)."""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml
from PIL import Image

from reid.data.market import format_market_name

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

CONFIG = {
    "datasets": ["tiny"],
    "dataset": {"tiny": {"source": "archive", "kind": "market1501", "archive": "tiny.zip", "custom": True}},
    "report": {"table1_datasets": ["tiny"], "table2_dataset": "tiny", "table3_dataset": "tiny"},
}


def jpeg(seed: int) -> bytes:
    img = Image.new("RGB", (8, 16), ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def market_zip(path: Path, broken: bool = False) -> Path:
    """A tiny Market-1501-layout archive; ``broken``: one query image cut short (a damaged download)."""
    files, k = {}, 0
    for folder, pids, cams in (("bounding_box_train", range(1, 5), (1, 2)), ("query", range(5, 8), (1,)),
                               ("bounding_box_test", range(5, 8), (2, 3))):
        for pid in pids:
            for cam in cams:
                k += 1
                files[f"{folder}/{format_market_name(pid, cam, 1, 100 + k, 0)}"] = jpeg(k)
    if broken:
        name = next(n for n in files if n.startswith("query/"))
        files[name] = files[name][:40]
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr("Market-1501-v15.09.15/" + rel, data)
    return path


def snakemake(workdir: Path, *args: str, config: str = "config.yaml"):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    return subprocess.run([str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
                           "--cores", "1", *args, "--configfile", str(workdir / config)],
                          capture_output=True, text=True, env=env, cwd=workdir)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def replace_archive(archive: Path, broken: bool) -> None:
    """The user re-places the archive (a re-download): a new file, newer than everything made before."""
    before = archive.stat().st_mtime_ns
    market_zip(archive, broken=broken)
    assert archive.stat().st_mtime_ns > before


def test_a_bad_replaced_archive_leaves_the_last_good_dataset_and_its_results(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    archive = market_zip((tmp_path / "resources").mkdir() or tmp_path / "resources" / "tiny.zip")
    target = "results/tiny/dataset.json"
    first = snakemake(tmp_path, target)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    data = tmp_path / "data" / "tiny"
    good = tree(data)
    assert len([n for n in good if n.endswith(".jpg")]) == 17
    report = (tmp_path / target).read_bytes()

    # a damaged archive replaces the good one: the re-run of prepare_dataset fails ...
    replace_archive(archive, broken=True)
    second = snakemake(tmp_path, target)
    assert second.returncode != 0
    assert "Error in rule prepare_dataset" in second.stdout + second.stderr
    # ... and the last good dataset and what was made from it are still there, unchanged
    assert tree(data) == good
    assert (tmp_path / target).read_bytes() == report
    # what the log says is what happened
    log = (tmp_path / "results/logs/prepare/tiny.log").read_text()
    assert "image does not decode" in log and "data/tiny was left unchanged" in log
    # the rule's declared output is the manifest, which Snakemake removed: the rule runs again next time
    manifest = tmp_path / "data" / "tiny.manifest.json"
    assert not manifest.exists() and "data/tiny.manifest.json does not exist" in log
    assert archive.exists()  # the bad archive is the user's to inspect: not deleted either
    assert not [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no work folders left

    # the good archive back: the dataset is installed again, the same files
    replace_archive(archive, broken=False)
    third = snakemake(tmp_path, target)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert tree(data) == good and manifest.exists()


def test_a_present_archive_is_never_fetched_again(tmp_path):
    """A placed archive is source data: no rerun trigger (here: a checksum added to the config, which
    re-checks it in prepare_dataset) schedules the fetch rule, which Snakemake would start by deleting it."""
    import hashlib

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    archive = market_zip((tmp_path / "resources").mkdir() or tmp_path / "resources" / "tiny.zip")
    dry = snakemake(tmp_path, "-n", "data/tiny.manifest.json")
    assert dry.returncode == 0 and "fetch_dataset" not in dry.stdout, dry.stdout + dry.stderr
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with_md5 = {**CONFIG, "dataset": {"tiny": {**CONFIG["dataset"]["tiny"], "md5": md5,
                                               "url": "https://example.org/tiny.zip"}}}
    (tmp_path / "md5.yaml").write_text(yaml.safe_dump(with_md5))
    assert snakemake(tmp_path, "data/tiny.manifest.json").returncode == 0
    dry = snakemake(tmp_path, "-n", "--forceall", "data/tiny.manifest.json", config="md5.yaml")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "prepare_dataset" in dry.stdout and "fetch_dataset" not in dry.stdout
    # a missing archive is still fetched (here: from the configured URL)
    archive.unlink()
    dry = snakemake(tmp_path, "-n", "data/tiny.manifest.json", config="md5.yaml")
    assert "rule fetch_dataset" in dry.stdout, dry.stdout + dry.stderr
