import pytest

from reid.data.market import (NamingError, format_market_name, parse_name, scan_dataset, scan_split)


def test_market_name_fields():
    n = parse_name("data/x/bounding_box_test/0002_c1s1_000451_03.jpg")
    assert (n.pid, n.camid, n.sequence, n.frame, n.bbox) == (2, 1, 1, 451, 3)
    assert not n.is_junk and not n.is_distractor


def test_junk_and_distractor_market():
    assert parse_name("-1_c3s2_012345_00.jpg").is_junk
    assert parse_name("0000_c6s4_002202_01.jpg").is_distractor


def test_duke_name():
    n = parse_name("0001_c2_f0046182.jpg")
    assert (n.pid, n.camid, n.frame, n.sequence, n.bbox) == (1, 2, 46182, 0, 0)


@pytest.mark.parametrize("name", ["0002_c1s1_000451.jpg", "2_c1s1_000451_03.jpg", "0002_c0s1_000451_03.jpg",
                                  "abcd_c1s1_000451_03.jpg", "0002_c1s1_000451_03.jpg.bak", "-2_c1s1_000451_03.jpg",
                                  "readme.txt"])
def test_malformed_names_are_rejected_naming_the_file(name):
    with pytest.raises(NamingError, match=name.replace(".", r"\.")):
        parse_name(f"some/dir/{name}")


def test_format_round_trips():
    for pid in (-1, 0, 7, 1501):
        name = format_market_name(pid, 3, 2, 1234, 5)
        n = parse_name(name)
        assert (n.pid, n.camid, n.sequence, n.frame, n.bbox) == (pid, 3, 2, 1234, 5)
    with pytest.raises(ValueError):
        format_market_name(10000, 1, 1, 1, 1)


def test_scan_skips_non_images_and_reports_bad_names(tmp_path):
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (tmp_path / sub).mkdir()
    (tmp_path / "bounding_box_train" / "0001_c1s1_000001_00.jpg").write_bytes(b"x")
    (tmp_path / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "query" / "0002_c2s1_000001_00.jpg").write_bytes(b"x")
    splits = scan_dataset(tmp_path)
    assert set(splits) == {"train", "gallery", "query"}  # no gt_bbox folder -> no multi_query split
    assert [r.pid for r in splits["train"]] == [1]
    (tmp_path / "query" / "bad_name.jpg").write_bytes(b"x")
    with pytest.raises(NamingError, match="bad_name.jpg"):
        scan_split(tmp_path / "query")
    with pytest.raises(FileNotFoundError, match="gt_bbox"):
        scan_split(tmp_path / "gt_bbox")


def test_every_entry_of_a_split_folder_is_accounted_for(tmp_path):
    """Images of any suffix and case are read; OS clutter is ignored and counted; nothing else passes."""
    from reid.data.market import SplitFolderError, scan_entries

    q = tmp_path / "query"
    q.mkdir()
    names = ["0001_c1s1_000001_00.jpg", "0002_c1s1_000001_00.png", "0003_c1s1_000001_00.jpeg",
             "0004_c1s1_000001_00.bmp", "0005_c1s1_000001_00.JPG", "0006_c2_f0000001.PNG"]
    for n in names:
        (q / n).write_bytes(b"x")
    for clutter in ("Thumbs.db", ".DS_Store", "desktop.ini", "THUMBS.DB", "._0001_c1s1_000001_00.jpg"):
        (q / clutter).write_bytes(b"x")
    scan = scan_entries(q)
    assert [r.pid for r in scan.records] == [1, 2, 3, 4, 5, 6]
    assert [r.path for r in scan.records] == [str(q / n) for n in names]
    assert len(scan.ignored) == 5 and scan.problems == []
    assert [r.pid for r in scan_split(q)] == [1, 2, 3, 4, 5, 6]  # what training and extraction read

    (q / "readme.txt").write_text("hello")
    (q / "sub").mkdir()
    with pytest.raises(SplitFolderError) as err:
        scan_split(q)
    # both are named, each with the split folder in its path
    assert f"{q / 'readme.txt'}: malformed re-ID image name" in str(err.value)
    assert f"{q / 'sub'}: not an image file (a folder" in str(err.value)
