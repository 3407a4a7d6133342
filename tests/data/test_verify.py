"""Dataset verification and archive -> data/{dataset}/ layout, on tiny datasets built here."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from reid.data import verify as verify_mod
from reid.data.extract import UnsafeArchiveError
from reid.data.kinds import REGISTRY as KNOWN_SPLITS
from reid.data.kinds import DatasetKind, SplitCounts
from reid.data.kinds.layouts import MarketLayout
from reid.data.market import format_market_name
from reid.data.prepare import DatasetLayoutError
from reid.data.verify import DatasetVerificationError, find_undecodable, prepare_dataset, verify_dataset


def jpeg_bytes(seed: int = 0, size=(8, 16)) -> bytes:
    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    for x in range(size[0]):  # some texture so the entropy-coded part is not trivially short
        img.putpixel((x, x % size[1]), (255 - x * 20, x * 30, 128))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


# A tiny Market-1501-style split: ids 1..4 train (cams 1,2), ids 5..7 test (query cams 1, gallery cams 2,3),
# 2 distractors (0000) and 3 junk (-1) in the gallery, gt_bbox with 2 images.
def market_files() -> dict[str, bytes]:
    files, k = {}, 0

    def add(folder, pid, cam, frame):
        nonlocal k
        files[f"{folder}/{format_market_name(pid, cam, 1, frame, 0)}"] = jpeg_bytes(k)
        k += 1

    for pid in range(1, 5):
        for cam in (1, 2):
            add("bounding_box_train", pid, cam, 100 + pid)
    for pid in range(5, 8):
        add("query", pid, 1, 200 + pid)
        for cam in (2, 3):
            add("bounding_box_test", pid, cam, 300 + pid)
    for i in range(2):
        add("bounding_box_test", 0, 1, 400 + i)
    for i in range(3):
        add("bounding_box_test", -1, 2, 500 + i)
    for pid in (5, 6):
        add("gt_bbox", pid, 1, 600 + pid)
    return files


TINY_KNOWN = DatasetKind(
    name="market1501",
    display_name="tiny Market",
    layout=MarketLayout(),
    folder="Market-1501-v15.09.15",
    archive="Market-1501-v15.09.15.zip",
    md5=None,
    splits={
        "train": SplitCounts(images=8, identities=4, cameras=2),
        "query": SplitCounts(images=3, identities=3, cameras=1),
        "gallery": SplitCounts(images=11, identities=3, cameras=3, junk=3, distractors=2),
    },
    has_multi_query=True,
    how_to_get="",
)


@pytest.fixture
def tiny_known(monkeypatch):
    """Make kind 'market1501' describe the tiny dataset above instead of the real 36k images."""
    monkeypatch.setattr(verify_mod, "get_kind", lambda kind: TINY_KNOWN)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def make_zip(path: Path, files: dict[str, bytes], prefix: str = "Market-1501-v15.09.15/") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(prefix + rel, data)
    return path


def test_counts_of_a_tiny_market_layout(tmp_path):
    root = write_tree(tmp_path / "ds", market_files())
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"\x00junk")
    report = verify_dataset(root, None, False)
    assert report["ok"] and report["problems"] == []
    s = report["splits"]
    assert (s["train"]["images"], s["train"]["identities"], s["train"]["cameras"]) == (8, 4, [1, 2])
    assert s["train"]["pid_range"] == [1, 4]
    assert (s["query"]["images"], s["query"]["identities"], s["query"]["cameras"]) == (3, 3, [1])
    g = s["gallery"]
    assert (g["images"], g["identities"], g["junk"], g["distractors"], g["cameras"]) == (11, 3, 3, 2, [1, 2, 3])
    assert g["pid_range"] == [5, 7]  # junk and distractors are not identities
    assert s["multi_query"]["images"] == 2
    assert report["non_image_files"] == ["bounding_box_train/Thumbs.db"]
    assert s["train"]["non_image_files"] == 1
    assert report["identities_in_train_and_test"] == 0
    assert report["query_identities_missing_from_gallery"] == 0
    assert report["queries_without_cross_camera_match"] == 0
    assert report["known_split"] is None
    json.dumps(report)  # must be writable as dataset.json


def test_query_without_cross_camera_match_is_counted(tmp_path):
    files = market_files()
    files[f"query/{format_market_name(5, 2, 1, 999, 0)}"] = jpeg_bytes(99)  # gallery of pid 5: cams 2, 3
    files[f"query/{format_market_name(9, 1, 1, 999, 0)}"] = jpeg_bytes(98)  # pid 9: not in the gallery
    report = verify_dataset(write_tree(tmp_path / "ds", files), None, False)
    # a pid-5 query in camera 2 still has camera 3; pid 9 has nothing
    assert report["queries_without_cross_camera_match"] == 1
    assert report["query_identities_missing_from_gallery"] == 1


def test_corrupt_and_truncated_images_are_named(tmp_path):
    files = market_files()
    good = files["query/" + format_market_name(5, 1, 1, 205, 0)]
    files["query/" + format_market_name(5, 1, 1, 205, 0)] = good[: len(good) // 2]  # truncated
    files["bounding_box_train/" + format_market_name(1, 1, 1, 101, 0)] = b"not a jpeg at all" * 10
    root = write_tree(tmp_path / "ds", files)
    with pytest.raises(DatasetVerificationError) as err:
        verify_dataset(root, None, False)
    msg = str(err.value)
    assert "0005_c1s1_000205_00.jpg" in msg and "truncated" in msg
    assert "0001_c1s1_000101_00.jpg" in msg
    bad = {u["path"] for u in err.value.report["undecodable_images"]}
    assert bad == {"query/0005_c1s1_000205_00.jpg", "bounding_box_train/0001_c1s1_000101_00.jpg"}
    assert err.value.report["ok"] is False


def test_truncation_is_caught_even_when_pil_is_told_to_tolerate_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = jpeg_bytes(3, size=(64, 128))
    for cut in (len(data) - 2, len(data) // 2, 20):
        (tmp_path / f"cut{cut}.jpg").write_bytes(data[:cut])
    (tmp_path / "whole.jpg").write_bytes(data)
    bad = dict(find_undecodable(sorted(tmp_path.iterdir()), workers=2))
    assert set(map(lambda p: Path(p).name, bad)) == {f"cut{c}.jpg" for c in (len(data) - 2, len(data) // 2, 20)}
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_thread_pool_and_serial_decode_agree(tmp_path):
    data = jpeg_bytes(1)
    paths = []
    for i in range(150):
        p = tmp_path / f"{i:03d}.jpg"
        p.write_bytes(data if i % 7 else data[: len(data) // 3])
        paths.append(p)
    pooled = find_undecodable(paths, workers=4)
    serial = find_undecodable(paths, workers=1)
    assert pooled == serial
    assert [Path(p).name for p, _ in pooled] == [f"{i:03d}.jpg" for i in range(150) if i % 7 == 0]


def test_malformed_names_are_all_named(tmp_path):
    files = market_files()
    files["bounding_box_test/0005_c1s1_12_00.jpg"] = jpeg_bytes(5)
    files["query/person7.jpg"] = jpeg_bytes(6)
    with pytest.raises(DatasetVerificationError) as err:
        verify_dataset(write_tree(tmp_path / "ds", files), None, False)
    assert "0005_c1s1_12_00.jpg" in str(err.value) and "person7.jpg" in str(err.value)
    assert len(err.value.report["malformed_names"]) == 2


def test_case_duplicates_fail_cross_split_duplicates_are_reported(tmp_path):
    files = market_files()
    name = format_market_name(1, 1, 1, 101, 0)
    files[f"bounding_box_train/{name[:-4]}.JPG"] = jpeg_bytes(7)
    files[f"query/{format_market_name(5, 2, 1, 305, 0)}"] = jpeg_bytes(8)  # a gallery image's name
    with pytest.raises(DatasetVerificationError) as err:
        verify_dataset(write_tree(tmp_path / "ds", files), None, False)
    report = err.value.report
    dups = report["duplicate_names"]
    assert dups["within_split"] == [[f"bounding_box_train/{name[:-4]}.JPG", f"bounding_box_train/{name}"]]
    assert dups["across_splits"] == [{"name": format_market_name(5, 2, 1, 305, 0), "splits": ["gallery", "query"]}]
    assert len(report["problems"]) == 1 and "differ only in case" in report["problems"][0]


def test_missing_split_folder_fails(tmp_path):
    files = {k: v for k, v in market_files().items() if not k.startswith("query/")}
    with pytest.raises(DatasetVerificationError, match="missing split folder query/"):
        verify_dataset(write_tree(tmp_path / "ds", files), None, False)


def test_known_split_matches(tmp_path, tiny_known):
    report = verify_dataset(write_tree(tmp_path / "ds", market_files()), "market1501", False)
    assert report["ok"] and report["known_split"]["checked"]
    assert all(r["ok"] for r in report["known_split"]["comparison"])


def test_count_mismatch_fails_unless_custom(tmp_path, tiny_known):
    files = market_files()
    del files["bounding_box_train/" + format_market_name(1, 1, 1, 101, 0)]
    del files["bounding_box_test/" + format_market_name(-1, 2, 1, 500, 0)]
    root = write_tree(tmp_path / "ds", files)
    with pytest.raises(DatasetVerificationError) as err:
        verify_dataset(root, "market1501", False)
    msg = str(err.value)
    assert "train.images: expected 8, found 7" in msg
    assert "gallery.images: expected 11, found 10" in msg and "gallery.junk: expected 3, found 2" in msg
    assert "custom: true" in msg
    report = verify_dataset(root, "market1501", True)  # custom: reported, not enforced
    assert report["ok"] and report["known_split"]["checked"] is False
    assert {r["field"] for r in report["known_split"]["comparison"] if not r["ok"]} == {
        "train.images", "gallery.images", "gallery.junk"}


def test_train_test_identity_overlap_fails_a_known_split(tmp_path, tiny_known):
    files = market_files()
    del files["bounding_box_train/" + format_market_name(1, 1, 1, 101, 0)]
    files["bounding_box_train/" + format_market_name(5, 1, 1, 101, 0)] = jpeg_bytes(1)  # a test identity
    with pytest.raises(DatasetVerificationError, match="identities_in_train_and_test: expected 0, found 1"):
        verify_dataset(write_tree(tmp_path / "ds", files), "market1501", False)


def test_real_known_splits_are_consistent():
    m = KNOWN_SPLITS["market1501"].splits["gallery"]
    assert m.images == 13120 + m.distractors + m.junk  # the breakdown of bounding_box_test
    d = KNOWN_SPLITS["dukemtmcreid"]
    assert (d.splits["train"].images, d.splits["query"].images, d.splits["gallery"].images) == (16522, 2228, 17661)
    assert not d.has_multi_query and KNOWN_SPLITS["market1501"].has_multi_query
    with pytest.raises(ValueError, match="unknown dataset kind 'cuhk03'"):
        verify_dataset(Path("."), "cuhk03", False)


def test_synthetic_dataset_verifies(request):
    pytest.importorskip("reid.data.synthetic")
    root, _ = request.getfixturevalue("tiny_dataset")
    report = verify_dataset(root, None, False)
    assert report["ok"] and report["splits"]["train"]["images"] > 0


# ------------------------------------------------------------------------------------ prepare_dataset


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".prepare-" in p.name)


def test_prepare_lays_out_a_market_zip(tmp_path, tiny_known):
    files = market_files()
    files["gt_query/0005_c1s1_000205_00_good.mat"] = b"MATLAB"
    files["readme.txt"] = b"hello"
    files["bounding_box_test/Thumbs.db"] = b"\x00"
    archive = make_zip(tmp_path / "Market-1501-v15.09.15.zip", files)
    out = tmp_path / "data" / "market1501"
    report = prepare_dataset(archive, "market1501", out)
    assert report["ok"] and report["root"] == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["bounding_box_test", "bounding_box_train", "gt_bbox", "query"]
    assert len(list((out / "bounding_box_train").glob("*.jpg"))) == 8
    assert report["source"]["dataset_folder"] == "Market-1501-v15.09.15"
    assert report["source"]["not_copied"] == ["gt_query", "readme.txt"]
    assert leftovers(out.parent) == []
    assert verify_dataset(out, "market1501", False)["splits"] == report["splits"]


def test_prepare_a_duke_style_tar_gz_without_a_top_folder(tmp_path):
    files = {}
    for i, (split, pid, cam) in enumerate([("bounding_box_train", 1, 1), ("bounding_box_train", 1, 2),
                                           ("query", 3, 1), ("bounding_box_test", 3, 2), ("bounding_box_test", 9, 5)]):
        files[f"{split}/{pid:04d}_c{cam}_f{1000 + i:07d}.jpg"] = jpeg_bytes(i)
    archive = tmp_path / "duke.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = tmp_path / "data" / "duke"
    report = prepare_dataset(archive, None, out)  # kind None: structure only
    assert report["source"]["dataset_folder"] == "."
    assert report["splits"]["gallery"]["cameras"] == [2, 5] and "multi_query" not in report["splits"]
    # the real kind checks the published counts, which 5 images do not have; out stays as it was
    with pytest.raises(DatasetVerificationError, match="train.images: expected 16522, found 2") as err:
        prepare_dataset(archive, "dukemtmcreid", out)
    assert "was left unchanged" in str(err.value) and ".prepare-" not in str(err.value)
    assert len(list((out / "query").iterdir())) == 1 and leftovers(out.parent) == []


def test_failed_prepare_keeps_the_existing_folder(tmp_path, tiny_known):
    out = tmp_path / "data" / "market1501"
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("user data")
    files = market_files()
    files["query/" + format_market_name(6, 1, 1, 206, 0)] = b"\xff\xd8\xff\xe0 broken"
    bad = make_zip(tmp_path / "bad.zip", files)
    with pytest.raises(DatasetVerificationError, match="0006_c1s1_000206_00.jpg"):
        prepare_dataset(bad, "market1501", out)
    assert (out / "mine.txt").read_text() == "user data" and leftovers(out.parent) == []

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("Market-1501-v15.09.15/query/0001_c1s1_000001_00.jpg", jpeg_bytes(1))
        zf.writestr("../../escaped.txt", b"x")
    with pytest.raises(UnsafeArchiveError):
        prepare_dataset(evil, "market1501", out)
    assert (out / "mine.txt").exists() and not (tmp_path / "escaped.txt").exists()

    empty = make_zip(tmp_path / "other.zip", {"docs/readme.txt": b"no dataset"}, prefix="")
    with pytest.raises(DatasetLayoutError, match="expected Market-1501-v15.09.15/"):
        prepare_dataset(empty, "market1501", out)
    assert (out / "mine.txt").exists() and leftovers(out.parent) == []

    # a good archive replaces the folder completely
    report = prepare_dataset(make_zip(tmp_path / "good.zip", market_files()), "market1501", out)
    assert report["ok"] and not (out / "mine.txt").exists() and leftovers(out.parent) == []


def test_two_dataset_folders_are_ambiguous(tmp_path):
    files = {f"{top}/{k}": v for top in ("a", "b") for k, v in market_files().items()}
    archive = make_zip(tmp_path / "two.zip", files, prefix="")
    with pytest.raises(DatasetLayoutError, match=r"several dataset folders found.*\['a', 'b'\]"):
        prepare_dataset(archive, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()
