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


# ---------------------------------------------------------------- MSMT17 lists saved on another OS

def msmt17_archive(tmp_path: Path, encode) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from native_layouts import msmt17_files, tar_gz

    files = msmt17_files()
    for name in ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"):
        files[f"MSMT17_V1/{name}"] = encode(files[f"MSMT17_V1/{name}"])
    return tar_gz(tmp_path / "MSMT17_V1.tar.gz", files)


def prepare_msmt17(archive: Path, out: Path) -> int:
    return main(["prepare", "--spec", '{"source": "archive", "kind": "msmt17", "archive": "MSMT17_V1.tar.gz", '
                 '"custom": true}', "--source", str(archive), "--out", str(out)])


@pytest.mark.parametrize("encode", [lambda b: b"\xef\xbb\xbf" + b, lambda b: b.replace(b"\n", b"\r\n"),
                                    lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n"),
                                    lambda b: b.replace(b"\n", b"\r")],
                         ids=["bom", "crlf", "bom+crlf", "cr"])
def test_msmt17_lists_with_a_byte_order_mark_or_other_line_ends_read_as_they_look(tmp_path, encode):
    out = tmp_path / "data" / "msmt"
    assert prepare_msmt17(msmt17_archive(tmp_path, encode), out) == 0
    names = (out / "original_names.tsv").read_text().splitlines()[1:]
    assert len(names) == 13 and not any("\ufeff" in n or "\r" in n for n in names)


def test_a_refused_list_line_is_shown_visibly_with_path_and_line(tmp_path, capsys):
    # a zero-width space inside a path: invisible when printed, shown by its repr
    archive = msmt17_archive(tmp_path, lambda b: b.replace(b"0000/0000_000", "0000/\u200b0000_000".encode(), 1))
    assert prepare_msmt17(archive, tmp_path / "data" / "msmt") == 1
    err = capsys.readouterr().err
    assert "list_train.txt, line 1: expected" in err and "\\u200b" in err


# ---------------------------------------------------------------- EXIF orientation

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_dataset):
    from reid import tracking
    from reid.train import TrainOutputs, train
    from reid.typed_config import ModelConfig, TrainConfig

    out = tmp_path_factory.mktemp("model")
    train(data_root=tiny_dataset[0], mean_image=tiny_dataset[1], dataset="tiny", variant="baseline", seed=0,
          model_cfg=ModelConfig.from_dict({"backbone": "resnet18", "embedding_dim": 16}),
          train_cfg=TrainConfig.from_dict({"height": 32, "width": 16, "epochs": 1, "batch_pairs": 8, "lr_step": 1,
                                           "device": "cpu"}),
          tracker=tracking.NullTracker(), checkpoint_dir=out / "ckpt",
          outputs=TrainOutputs(out / "model.pt", out / "history.csv", out / "run.json"))
    return out / "model.pt"


def test_rank_sees_a_phone_photo_stored_sideways_upright(tmp_path, tiny_dataset, tiny_model, capsys):
    """A photo stored rotated with EXIF orientation 6 ("rotate 90 degrees clockwise to view") ranks as
    the upright image it shows: at distance 0 from the same image stored upright."""
    from PIL import Image

    root, mean = tiny_dataset
    people = sorted((root / "query").glob("*.jpg"))[:1] + sorted((root / "bounding_box_test").glob("*.jpg"))[:5]
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for p in people:  # lossless copies
        Image.open(p).convert("RGB").save(gallery / f"{p.stem}.png")
    upright = Image.open(gallery / f"{people[0].stem}.png")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # stored as the sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer turns it 90 degrees clockwise (ROTATE_270) to show it
    query = tmp_path / "phone.png"
    sideways.save(query, exif=exif)
    rc = main(["rank", "--model-file", str(tiny_model), "--mean-image", str(mean), "--query", str(query),
               "--gallery", str(gallery), "--top", "3", "--device", "cpu", "--threads", "1"])
    assert rc == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[2].endswith(f"{people[0].stem}.png") and float(first[1]) == pytest.approx(0.0, abs=1e-6)


def test_images_without_exif_load_exactly_as_decoded(tiny_dataset):
    """The demo's synthetic images carry no orientation: upright() leaves every pixel as it is."""
    import numpy as np
    from PIL import Image

    from reid.data.transforms import load_image

    root, _ = tiny_dataset
    for p in sorted(root.rglob("*.jpg"))[:40] + sorted(root.rglob("*.png"))[:40]:
        with Image.open(p) as im:
            plain = np.asarray(im.convert("RGB"))
        assert np.array_equal(load_image(p).mul(255).round().byte().permute(1, 2, 0).numpy(), plain), p
