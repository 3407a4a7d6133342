"""Dataset kinds (reid.data.kinds): the registry against the schema and the paper numbers, and each
kind's native layout -> Market-1501 on tiny synthetic copies built here (a few images each)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from native_layouts import cuhk03np_files, image_bytes, market_like_files, msmt17_files, tar_gz, write_tree, zip_of

from reid.config import ConfigError
from reid.config_checks import validate
from reid.data.kinds import REGISTRY, DatasetLayoutError, get_kind
from reid.data.market import format_market_name, scan_dataset
from reid.data.prepare import prepare_dataset
from reid.data.verify import DatasetVerificationError

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ the registry

def test_schema_names_the_registry_and_the_config_check_enforces_it():
    # the schema checks a kind's form only (a plug-in may register more, reid.plugins); it lists the
    # registry's kinds for the reader, and reid.config_checks.check_references is the check
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    kind = schema["$defs"]["dataset"]["properties"]["kind"]
    assert "enum" not in kind
    listed = re.search(r"one of ([a-z0-9_, ]+) \(", kind["description"]).group(1).split(", ")
    assert listed == sorted(REGISTRY)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["dataset"]["market"] = {"source": "archive", "archive": "m.zip", "kind": "market1502"}
    with pytest.raises(ConfigError, match=r"dataset.market.kind: unknown dataset kind 'market1502'; known: .*msmt17"):
        validate(config)


def test_paper_keys_match_the_paper_numbers():
    labels = yaml.safe_load((ROOT / "reid/report/paper_numbers.yaml").read_text())["dataset_labels"]
    keyed = {k.paper_key: k.display_name for k in REGISTRY.values() if k.paper_key}
    assert keyed == labels  # every paper dataset has exactly one kind, named as the paper names it


def test_published_counts_add_up():
    msmt = REGISTRY["msmt17"]
    assert sum(s.images for s in msmt.splits.values()) == 126441  # the paper's total
    assert msmt.total_identities == 1041 + 3060 and msmt.total_cameras == 15
    for subset, (train, gallery) in {"labeled": (7368, 5328), "detected": (7365, 5332)}.items():
        k = REGISTRY[f"cuhk03np_{subset}"]
        assert (k.splits["train"].images, k.splits["query"].images, k.splits["gallery"].images) == (train, 1400, gallery)
        assert k.splits["query"].images == 2 * k.splits["query"].identities  # one query per camera
        assert k.total_identities == 767 + 700 == k.splits["train"].identities + k.splits["gallery"].identities
    assert not REGISTRY["custom"].checks_counts and get_kind(None) is REGISTRY["custom"]
    with pytest.raises(ValueError, match="unknown dataset kind 'cuhk03'.*msmt17"):
        get_kind("cuhk03")


# ------------------------------------------------------------------------------------ layouts

@pytest.mark.parametrize("version", ["MSMT17_V1", "MSMT17_V2"])
def test_msmt17_is_laid_out_as_market(tmp_path, version):
    archive = tar_gz(tmp_path / f"{version}.tar.gz", msmt17_files(version))
    out = tmp_path / "data" / "msmt"
    report = prepare_dataset(archive, "msmt17", out, custom=True)
    s = report["splits"]
    # list_train (3) + list_val (1) are the training set; test labels move past the training ones
    assert (s["train"]["images"], s["train"]["identities"], s["train"]["pid_range"]) == (4, 2, [1, 2])
    assert (s["query"]["images"], s["query"]["identities"], s["query"]["pid_range"]) == (3, 3, [3, 5])
    assert s["gallery"]["cameras"] == [4, 15] and s["gallery"]["images"] == 6
    assert report["identities_in_train_and_test"] == 0 and report["queries_without_cross_camera_match"] == 0
    assert report["source"]["version"] == version and report["source"]["unlisted_count"] == 0
    # every image is traceable to the release's own file
    rows = [line.split("\t") for line in (out / "original_names.tsv").read_text().splitlines()[1:]]
    assert len(rows) == 13 and all((out / split / name).is_file() for split, name, _ in rows)
    test = "test" if version == "MSMT17_V1" else "mask_test_v2"
    assert ["query", "0003_c3s0_000001_00.jpg", f"{test}/0000/0000_000_03_0303morning_0004_0.jpg"] in rows
    # the published counts are enforced without custom: true
    with pytest.raises(DatasetVerificationError) as err:
        prepare_dataset(archive, "msmt17", tmp_path / "data" / "strict")
    msg = str(err.value)
    assert "train.images: expected 32621, found 4" in msg and "gallery.images: expected 82161, found 6" in msg
    assert "identities_in_all_splits: expected 4101, found 5" in msg and "custom: true" in msg
    assert not (tmp_path / "data" / "strict").exists()


def test_msmt17_list_errors_name_the_file_and_line(tmp_path):
    files = msmt17_files()
    files["MSMT17_V1/list_val.txt"] += b"0001/0001_009_01_x_0001_0.jpg\n"  # no label
    with pytest.raises(DatasetLayoutError, match=r"list_val.txt, line 2: expected"):
        prepare_dataset(tar_gz(tmp_path / "a.tar.gz", files), "msmt17", tmp_path / "out", custom=True)
    files = msmt17_files()
    files["MSMT17_V1/list_gallery.txt"] += b"0002/0002_009_05_x_0001_0.jpg 2\n"  # listed, not shipped
    with pytest.raises(DatasetLayoutError, match=r"list_gallery.txt, line 7: lists 'test/0002/0002_009_05_x_0001_0.jpg'"):
        prepare_dataset(tar_gz(tmp_path / "b.tar.gz", files), "msmt17", tmp_path / "out", custom=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("subset", ["labeled", "detected"])
def test_cuhk03np_is_laid_out_as_market_keeping_png(tmp_path, subset):
    archive = zip_of(tmp_path / "cuhk03-np.zip", cuhk03np_files())
    out = tmp_path / "data" / subset
    report = prepare_dataset(archive, f"cuhk03np_{subset}", out, custom=True)
    s = report["splits"]
    assert [(s[k]["images"], s[k]["identities"], s[k]["cameras"]) for k in ("train", "query", "gallery")] == [
        (4, 2, [1, 2]), (4, 2, [1, 2]), (4, 2, [1, 2])]
    assert report["source"]["subset"] == subset and report["source"]["dataset_folder"] == "cuhk03-np"
    names = sorted(p.name for p in (out / "query").iterdir())
    # frame = ordinal among the identity's images, gallery (1, 2) before query (3, 4); pid, camera, PNG kept
    assert names == ["0003_c1s0_000003_00.png", "0003_c2s0_000004_00.png",
                     "0004_c1s0_000003_00.png", "0004_c2s0_000004_00.png"]
    assert scan_dataset(out)["query"][0].pid == 3  # the one parser reads what the layout wrote
    with pytest.raises(DatasetVerificationError, match="train.images: expected 73[0-9]{2}, found 4"):
        prepare_dataset(archive, f"cuhk03np_{subset}", tmp_path / "data" / "strict")


def test_cuhk03np_rejects_foreign_names(tmp_path):
    files = cuhk03np_files()
    files["cuhk03-np/labeled/query/readme.txt"] = b"x"
    files["cuhk03-np/labeled/query/0003_c3_1.png"] = image_bytes(50, "PNG")  # a camera pair has views 1 and 2
    files["cuhk03-np/labeled/query/Thumbs.db"] = b"x"  # OS clutter is skipped and reported
    with pytest.raises(DatasetLayoutError, match=r"2 entries are not CUHK03-NP images.*0003_c3_1.png.*readme.txt"):
        prepare_dataset(zip_of(tmp_path / "c.zip", files), "cuhk03np_labeled", tmp_path / "out", custom=True)
    del files["cuhk03-np/labeled/query/readme.txt"], files["cuhk03-np/labeled/query/0003_c3_1.png"]
    report = prepare_dataset(zip_of(tmp_path / "d.zip", files), "cuhk03np_labeled", tmp_path / "out", custom=True)
    assert report["source"]["skipped_os_files"] == ["labeled/query/Thumbs.db"]


def test_a_folder_is_laid_out_without_touching_it(tmp_path):
    user = write_tree(tmp_path / "My Datasets" / "Market-1501-v15.09.15", market_like_files())
    (user / "readme.txt").write_text("mine")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in user.rglob("*") if p.is_file()}
    out = tmp_path / "data" / "mine"
    report = prepare_dataset(user.parent, None, out)  # kind unset: custom, structure only
    assert report["ok"] and report["source"]["kind"] == "custom"
    assert report["source"]["dataset_folder"] == "Market-1501-v15.09.15"
    assert report["source"]["hard_linked"] + report["source"]["copied"] == len(market_like_files())
    assert report["splits"]["gallery"]["distractors"] == 1
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in user.rglob("*") if p.is_file()} == before
    assert not (out / "readme.txt").exists() and sorted(p.name for p in out.iterdir()) == [
        "bounding_box_test", "bounding_box_train", "query"]
    # a later failing preparation from the folder leaves both the folder and the laid-out copy as they were
    (user / "query" / format_market_name(3, 1, 1, 999, 0)).write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DatasetVerificationError, match="does not decode"):
        prepare_dataset(user, None, out)
    assert len(list((out / "query").iterdir())) == 2 and (user / "readme.txt").read_text() == "mine"
    # the output may not be inside the folder, nor the folder inside the output
    with pytest.raises(ValueError, match="must be apart"):
        prepare_dataset(user, None, user / "data")
    assert not (user / "data").exists()


def test_registering_a_kind_from_outside(tmp_path, monkeypatch):
    from reid.data import kinds
    from reid.data.kinds import DatasetKind, SplitCounts
    from reid.data.kinds.layouts import MarketLayout

    monkeypatch.setattr(kinds, "REGISTRY", dict(kinds.REGISTRY))
    tiny = kinds.register(DatasetKind(
        name="tinybench", display_name="Tiny bench", layout=MarketLayout(), has_multi_query=False, how_to_get="",
        splits={"train": SplitCounts(4, 2, 2), "query": SplitCounts(2, 2, 1), "gallery": SplitCounts(5, 2, 3, distractors=1)}))
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(tiny)
    report = prepare_dataset(zip_of(tmp_path / "t.zip", market_like_files()), "tinybench", tmp_path / "out")
    assert report["known_split"]["kind"] == "tinybench" and all(r["ok"] for r in report["known_split"]["comparison"])


def test_config_entries_of_each_source():
    from reid.config import ConfigError
    from reid.config_checks import load, validate

    base = load(ROOT / "config.yaml")
    for entry, missing in (({"source": "folder", "kind": "market1501"}, "'path' is a required property"),
                           ({"source": "archive", "kind": "msmt17"}, "'archive' is a required property"),
                           ({"source": "archive", "archive": "x.zip", "kind": "cuhk03"},
                                "dataset.mine.kind: unknown dataset kind 'cuhk03'; known: cuhk03np_detected")):
        with pytest.raises(ConfigError, match=missing):
            validate({**base, "dataset": {**base["dataset"], "mine": entry}})
    # kind is optional: an archive or folder without it is a custom dataset in Market-1501 layout
    validate({**base, "dataset": {**base["dataset"], "own": {"source": "archive", "archive": "own.zip"},
                                  "mine": {"source": "folder", "path": "/data/mine"}}})


def test_tables_say_what_each_kind_is():
    from reid.data.kinds import kind_of
    from reid.report.paper import describe_dataset

    def info(name, spec):
        return describe_dataset(name, spec, kind_of(spec))

    msmt = info("msmt", {"source": "archive", "kind": "msmt17", "archive": "x.tar"})
    assert (msmt.label, msmt.kind, msmt.synthetic) == ("MSMT17 ('msmt')", None, False)  # the paper has no numbers
    assert info("c", {"source": "folder", "kind": "cuhk03np_labeled", "path": "/x"}).label == "CUHK03-NP (labeled) ('c')"
    mine = info("mine", {"source": "folder", "path": "/x"})
    assert mine.kind is None and "of your own in Market-1501 layout" in mine.label
    market = info("m", {"source": "folder", "kind": "market1501", "path": "/x"})
    assert market.kind == "market1501" and market.comparable_to("market1501")
    assert info("m", {"source": "folder", "kind": "market1501", "path": "/x", "custom": True}).kind is None
