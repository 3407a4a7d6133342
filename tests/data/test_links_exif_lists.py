"""Issue 21 kind 6: data as people keep it. Symlinked images and split folders are read through,
a dangling link is singled out with its path, EXIF-rotated photos rank upright, and MSMT17 lists
saved with a byte-order mark or CRLF line ends read as they look; anything refused is shown
visibly (repr), with its path and line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reid.cli import main


def linked_copy(src: Path, dst: Path) -> None:
    """``src``'s tree with every file a symbolic link to the original (a user's dataset linked from elsewhere)."""
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(p)


def prepare(folder: Path, out: Path) -> int:
    return main(["prepare", "--spec", f'{{"source": "folder", "path": "{folder}"}}', "--source", str(folder),
                 "--out", str(out), "--failed-report", str(out.parent / "failed.json")])


def test_a_folder_dataset_of_symlinked_images_is_laid_out_from_the_targets(tmp_path, tiny_dataset):
    root, _ = tiny_dataset
    linked_copy(root, tmp_path / "mine")
    out = tmp_path / "data" / "mine"
    assert prepare(tmp_path / "mine", out) == 0
    laid = [p for p in out.rglob("*") if p.is_file()]
    assert laid and not any(p.is_symlink() for p in out.rglob("*"))
    one = next(p for p in laid if p.suffix == ".jpg")
    original = root / one.relative_to(out)
    assert one.read_bytes() == original.read_bytes() and one.stat().st_ino == original.stat().st_ino  # a hard link


def test_a_symlinked_query_folder_is_taken_as_the_split(tmp_path, tiny_dataset):
    root, _ = tiny_dataset
    mine = tmp_path / "mine"
    shutil.copytree(root, mine, ignore=shutil.ignore_patterns("query"))
    (mine / "query").symlink_to(root / "query", target_is_directory=True)
    out = tmp_path / "data" / "mine"
    assert prepare(mine, out) == 0
    assert sorted(p.name for p in (out / "query").iterdir()) == sorted(p.name for p in (root / "query").iterdir())
    assert (out / "query").is_dir() and not (out / "query").is_symlink()


def test_a_dangling_image_link_is_named_with_its_path(tmp_path, tiny_dataset, capsys):
    root, _ = tiny_dataset
    linked_copy(root, tmp_path / "mine")
    gone = tmp_path / "gone.jpg"
    dangling = next((tmp_path / "mine" / "query").iterdir())
    dangling.unlink()
    dangling.symlink_to(gone)
    out = tmp_path / "data" / "mine"
    assert prepare(tmp_path / "mine", out) == 1
    err = capsys.readouterr().err
    assert f"{dangling}: a symbolic link whose target {str(gone)!r} does not exist (a dangling link)" in err
    assert not out.exists()


def test_a_dangling_split_folder_link_is_shown_as_one(tmp_path, tiny_dataset, capsys):
    root, _ = tiny_dataset
    mine = tmp_path / "mine"
    shutil.copytree(root, mine, ignore=shutil.ignore_patterns("query"))
    (mine / "query").symlink_to(tmp_path / "elsewhere" / "query", target_is_directory=True)
    assert prepare(mine, tmp_path / "data" / "mine") == 1
    err = capsys.readouterr().err
    assert f"'query -> {tmp_path / 'elsewhere' / 'query'} (dangling link)'" in err
    assert "'query/'" not in err  # no longer "no folder holding ... query/ ... top level holds: [... 'query/']"
