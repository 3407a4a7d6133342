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
from reid.data.prepare import prepare_dataset
from reid.data.verify import DatasetVerificationError, find_undecodable, verify_dataset


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
    assert report["ignored_files"] == ["bounding_box_train/Thumbs.db"]  # OS clutter: ignored and counted
    assert s["train"]["ignored_files"] == 1
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
                                           ("bounding_box_train", 2, 1), ("query", 3, 1), ("bounding_box_test", 3, 2), ("bounding_box_test", 9, 5)]):
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
    with pytest.raises(DatasetVerificationError, match="train.images: expected 16522, found 3") as err:
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


def image_bytes(fmt: str, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16), ((seed * 37) % 256, 90, 30)).save(buf, fmt)
    return buf.getvalue()


def test_images_of_every_suffix_are_verified_trained_on_and_extracted(tmp_path):
    """A valid re-ID name with suffix .png/.jpeg/.bmp/.JPG is an image for every stage, not a skipped file."""
    from reid.data.market import scan_dataset
    from reid.data.pairs import training_records

    files = market_files()
    renamed = {"bounding_box_train/" + format_market_name(1, 1, 1, 101, 0): ("PNG", ".png"),
               "query/" + format_market_name(5, 1, 1, 205, 0): ("JPEG", ".jpeg"),
               "bounding_box_test/" + format_market_name(6, 2, 1, 306, 0): ("BMP", ".bmp"),
               "bounding_box_test/" + format_market_name(7, 3, 1, 307, 0): ("JPEG", ".JPG")}
    for i, (old, (fmt, suffix)) in enumerate(renamed.items()):
        del files[old]
        files[old[: -len(".jpg")] + suffix] = image_bytes(fmt, i)
    root = write_tree(tmp_path / "ds", files)
    report = verify_dataset(root, None, False)
    s = report["splits"]
    assert (s["train"]["images"], s["query"]["images"], s["gallery"]["images"]) == (8, 3, 11)
    assert s["gallery"]["suffixes"] == {".JPG": 1, ".bmp": 1, ".jpg": 9}
    assert s["query"]["suffixes"] == {".jpeg": 1, ".jpg": 2}
    assert report["malformed_names"] == [] and report["unexpected_entries"] == []
    # the stages see the same images as verification
    splits = scan_dataset(root)
    assert [len(splits[k]) for k in ("train", "query", "gallery", "multi_query")] == [8, 3, 11, 2]
    records, _ = training_records(root)
    assert len(records) == 8 and any(r.path.endswith(".png") for r in records)


def test_a_non_image_with_an_image_name_fails_to_decode(tmp_path):
    files = market_files()
    files["query/" + format_market_name(8, 1, 1, 1, 0)[: -len(".jpg")] + ".png"] = b"not a png"
    with pytest.raises(DatasetVerificationError, match=r"does not decode: .*query/0008_c1s1_000001_00\.png"):
        verify_dataset(write_tree(tmp_path / "ds", files), None, False)


def test_os_clutter_is_ignored_and_counted_anything_else_fails_naming_its_split_folder(tmp_path):
    files = market_files()
    files["query/.DS_Store"] = b"\x00"
    files["gt_bbox/desktop.ini"] = b"[.ShellClassInfo]"
    files["bounding_box_test/notes.txt"] = b"my notes"
    files["query/0005_c1s1_000205_00.jpg.bak"] = b"old"
    root = write_tree(tmp_path / "ds", files)
    (root / "bounding_box_train" / "extra").mkdir()
    with pytest.raises(DatasetVerificationError) as err:
        verify_dataset(root, None, False)
    msg, report = str(err.value), err.value.report
    assert f"{root}/bounding_box_test/notes.txt: malformed re-ID image name" in msg
    assert f"{root}/query/0005_c1s1_000205_00.jpg.bak: malformed re-ID image name" in msg
    assert f"{root}/bounding_box_train/extra: not an image file (a folder" in msg
    assert sorted(m["path"] for m in report["malformed_names"]) == ["bounding_box_test/notes.txt",
                                                                   "query/0005_c1s1_000205_00.jpg.bak"]
    assert [u["path"] for u in report["unexpected_entries"]] == ["bounding_box_train/extra"]
    assert sorted(report["ignored_files"]) == ["gt_bbox/desktop.ini", "query/.DS_Store"]
    assert (report["splits"]["query"]["ignored_files"], report["splits"]["multi_query"]["ignored_files"]) == (1, 1)


def test_same_name_with_two_suffixes_is_a_duplicate(tmp_path):
    files = market_files()
    files["query/" + format_market_name(5, 1, 1, 205, 0)[: -len(".jpg")] + ".png"] = image_bytes("PNG")
    with pytest.raises(DatasetVerificationError, match="differ only in case or suffix"):
        verify_dataset(write_tree(tmp_path / "ds", files), None, False)


# ------------------------------------------------------------------ issue 11 kind 7: fail up front, report kept


def test_no_query_with_a_true_cross_camera_match_fails_verification(tmp_path):
    """Evaluation would fail after every model has trained: verification stops it first."""
    files = {k: v for k, v in market_files().items()
             if not k.startswith(("query/", "bounding_box_test/0005_c3"))}  # pid 5: gallery in camera 2 only
    files[f"query/{format_market_name(5, 2, 1, 905, 0)}"] = jpeg_bytes(5)  # only same-camera matches
    files[f"query/{format_market_name(9, 1, 1, 999, 0)}"] = jpeg_bytes(9)  # identity not in the gallery
    with pytest.raises(DatasetVerificationError, match="no query has a true match") as err:
        verify_dataset(write_tree(tmp_path / "ds", files), None, False)
    assert err.value.report["queries_without_cross_camera_match"] == 2


def test_a_training_split_of_one_identity_fails_verification(tmp_path):
    files = {k: v for k, v in market_files().items()
             if not k.startswith("bounding_box_train/") or k.startswith("bounding_box_train/0001")}
    with pytest.raises(DatasetVerificationError, match="bounding_box_train/ has 1 identity of real persons"):
        verify_dataset(write_tree(tmp_path / "ds", files), None, False)


def test_failed_verification_writes_its_report_beside_the_error(tmp_path, capsys):
    """`reid verify` on a bad dataset: exit 1, dataset.json not written (Snakemake would delete it anyway),
    dataset.failed.json written and named, with the undecodable and malformed files readable in it."""
    from reid.cli import main

    files = market_files()
    good = files["query/" + format_market_name(5, 1, 1, 205, 0)]
    files["query/" + format_market_name(5, 1, 1, 205, 0)] = good[: len(good) // 2]
    files["query/5_c1s1_000205_00.jpg"] = good
    root = write_tree(tmp_path / "ds", files)
    report, mean, failed = (tmp_path / "res" / n for n in ("dataset.json", "mean_image.pt", "dataset.failed.json"))
    argv = ["verify", "--dataset", "tiny", "--spec", '{"source": "synthetic"}', "--data", str(root),
            "--report", str(report), "--mean-image", str(mean)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"The full report (undecodable images, malformed names, ...) is in {failed}" in err
    assert not report.exists() and not mean.exists()
    written = json.loads(failed.read_text())
    assert written["ok"] is False and written["dataset"] == "tiny"
    assert [u["path"] for u in written["undecodable_images"]] == ["query/" + format_market_name(5, 1, 1, 205, 0)]
    assert [m["path"] for m in written["malformed_names"]] == ["query/5_c1s1_000205_00.jpg"]
    # fixed: the report and the mean image are written, the stale failure report is gone
    (root / "query" / "5_c1s1_000205_00.jpg").unlink()
    (root / "query" / format_market_name(5, 1, 1, 205, 0)).write_bytes(good)
    assert main(argv) == 0
    assert json.loads(report.read_text())["ok"] is True and mean.exists() and not failed.exists()


def test_failed_prepare_writes_its_report(tmp_path, tiny_known, capsys):
    from reid.cli import main

    files = market_files()
    files["query/readme.txt"] = b"hello"
    archive = make_zip(tmp_path / "m.zip", files)
    failed = tmp_path / "results" / "market1501" / "dataset.failed.json"
    rc = main(["prepare", "--spec", '{"source": "archive", "kind": "market1501", "archive": "m.zip"}',
               "--source", str(archive), "--out", str(tmp_path / "data" / "market1501"),
               "--failed-report", str(failed)])
    assert rc == 1 and str(failed) in capsys.readouterr().err
    written = json.loads(failed.read_text())
    assert [m["path"] for m in written["malformed_names"]] == ["query/readme.txt"]
    assert not (tmp_path / "data" / "market1501").exists()
