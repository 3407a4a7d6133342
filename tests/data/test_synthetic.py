"""The synthetic dataset: Market-1501 layout, protocol guarantees, determinism, looks."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from reid.data.market import (GALLERY_DIR, MULTI_QUERY_DIR, QUERY_DIR, TRAIN_DIR, format_market_name, parse_name,
                              scan_dataset)
from reid.data.synthetic import Difficulty, make_identities, plan_extra, make_cameras, synthesize
from reid.data.synthetic_draw import Attributes, draw_person, make_person

FOLDERS = (TRAIN_DIR, GALLERY_DIR, QUERY_DIR, MULTI_QUERY_DIR)
# images_per_camera starts at 1 so that the "only one image in this camera" case is exercised
ARGS = dict(seed=7, train_ids=6, test_ids=6, cameras=4, cameras_per_id=[2, 3], images_per_camera=[1, 3],
            distractors=5, junk=4, multi_query_images=[1, 3], height=32, width=16)


def _make(root: Path, **changes) -> dict:
    return synthesize(root, **{**ARGS, **changes})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "data"
    summary = _make(root)
    return root, summary, scan_dataset(root)


def _hashes(root: Path, folders=FOLDERS) -> dict[str, str]:
    return {f"{sub}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in folders for p in sorted((root / sub).iterdir())}


def _pid_cams(records):
    return {(r.pid, r.camid) for r in records}


# ---------------------------------------------------------------------------------------------- layout


def test_layout_and_names(built):
    root, _, ds = built
    assert set(ds) == {"train", "gallery", "query", "multi_query"}
    for sub in FOLDERS:
        files = list((root / sub).iterdir())
        assert files and all(p.suffix == ".jpg" for p in files)
        for p in files:
            n = parse_name(p)
            assert format_market_name(n.pid, n.camid, n.sequence, n.frame, n.bbox) == p.name
            assert 1 <= n.camid <= ARGS["cameras"] and 1 <= n.sequence <= 6
            # hand-drawn gt_bbox boxes are 00, detector boxes 01..
            assert (n.bbox == 0) == (sub == MULTI_QUERY_DIR)


def test_train_and_test_ids_are_disjoint_and_numbered_like_market(built):
    _, _, ds = built
    train = {r.pid for r in ds["train"]}
    test = {r.pid for r in ds["query"]}
    assert train == set(range(1, 7))
    assert test == set(range(7, 13))
    assert {r.pid for r in ds["gallery"]} == test | {0, -1}
    assert {r.pid for r in ds["multi_query"]} <= test


def test_one_query_per_identity_and_camera_with_a_cross_camera_gallery_match(built):
    _, _, ds = built
    query_keys = [(r.pid, r.camid) for r in ds["query"]]
    assert len(query_keys) == len(set(query_keys))
    gallery_cams = defaultdict(set)
    for r in ds["gallery"]:
        gallery_cams[r.pid].add(r.camid)
    for pid, cam in query_keys:
        assert gallery_cams[pid] - {cam}, f"query {pid} c{cam} has no gallery match in another camera"


def test_identity_counts_follow_the_configured_ranges(built):
    _, _, ds = built
    per_pid_cam = Counter((r.pid, r.camid) for r in ds["train"] + ds["gallery"] + ds["query"] if r.pid > 0)
    cams_of = defaultdict(set)
    for (pid, cam), n in per_pid_cam.items():
        assert 1 <= n <= 3
        cams_of[pid].add(cam)
    assert all(2 <= len(c) <= 3 for c in cams_of.values()) and len(cams_of) == 12
    # a camera gives a query unless that would leave a query without a cross-camera match
    for pid in range(7, 13):
        q_cams = {r.camid for r in ds["query"] if r.pid == pid}
        assert len(q_cams) >= len(cams_of[pid]) - 1


def test_distractor_and_junk_counts(built):
    _, summary, ds = built
    pids = Counter(r.pid for r in ds["gallery"])
    assert pids[0] == ARGS["distractors"] and pids[-1] == ARGS["junk"]
    for split in ("train", "query", "multi_query"):
        assert not {r.pid for r in ds[split]} & {0, -1}
    assert summary["distractors"] == 5 and summary["junk"] == 4


def test_multi_query_images_belong_to_query_identity_and_camera(built):
    _, _, ds = built
    per_query = Counter((r.pid, r.camid) for r in ds["multi_query"])
    assert set(per_query) == _pid_cams(ds["query"])
    assert all(1 <= n <= 3 for n in per_query.values())
    # different frames of the query's track: same sequence, frames not shared with any other crop
    seq_of = {(n.pid, n.camid): n.sequence for n in map(parse_name, (r.path for r in ds["query"]))}
    frames = Counter()
    for r in ds["multi_query"] + ds["query"] + ds["gallery"]:
        n = parse_name(r.path)
        if n.pid > 0:
            frames[(n.pid, n.camid, n.frame)] += 1
            if r in ds["multi_query"]:
                assert n.sequence == seq_of[(n.pid, n.camid)]
    assert max(frames.values()) == 1


def test_summary_matches_files(built):
    _, summary, ds = built
    assert {k: summary[k] for k in ds} == {k: len(v) for k, v in ds.items()}


def test_images_are_jpegs_of_the_configured_size(built):
    root, _, _ = built
    for sub in FOLDERS:
        for p in (root / sub).iterdir():
            with Image.open(p) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.size == (16, 32)


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_other_seed_differs(built, tmp_path):
    root, _, _ = built
    _make(tmp_path / "again")
    assert _hashes(tmp_path / "again") == _hashes(root)
    _make(tmp_path / "other", seed=8)
    assert set(_hashes(tmp_path / "other").values()).isdisjoint(_hashes(root).values())


def test_identities_do_not_depend_on_distractor_count(built, tmp_path):
    root, _, _ = built
    _make(tmp_path / "more", distractors=9, junk=0)
    assert _hashes(tmp_path / "more", [TRAIN_DIR, QUERY_DIR]) == _hashes(root, [TRAIN_DIR, QUERY_DIR])


def test_existing_output_is_refused_unless_overwrite(built, tmp_path):
    root = tmp_path / "d"
    _make(root)
    with pytest.raises(FileExistsError, match=TRAIN_DIR):
        _make(root)
    _make(root, overwrite=True)
    assert _hashes(root) == _hashes(built[0])


# ---------------------------------------------------------------------------------------------- looks


def _mean_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(0)


def test_cameras_change_appearance_more_than_frames_do(tmp_path):
    root = tmp_path / "cams"
    _make(root, train_ids=12, test_ids=2, images_per_camera=[3, 3], distractors=0, junk=0)
    by_pid = defaultdict(list)
    for p in (root / TRAIN_DIR).iterdir():
        n = parse_name(p)
        by_pid[n.pid].append((n.camid, _mean_rgb(p)))
    within, across = [], []
    for items in by_pid.values():
        for (c1, m1), (c2, m2) in itertools.combinations(items, 2):
            (within if c1 == c2 else across).append(np.linalg.norm(m1 - m2))
    assert np.mean(across) > 2 * np.mean(within), (np.mean(across), np.mean(within))


def test_hard_negatives_share_most_attributes():
    d = Difficulty(family_size=3, family_changes=(1, 2))
    people, used = make_identities(3, 30, 30, d)
    sigs = {pid: p.attrs.signature() for pid, p in people.items()}
    assert len(set(sigs.values())) == 60 == len(used)

    def n_diff(a, b):
        return sum(x != y for x, y in zip(sigs[a], sigs[b]))

    same_family, other_family = [], []
    for a, b in itertools.combinations(range(1, 31), 2):
        (same_family if (a - 1) // 3 == (b - 1) // 3 else other_family).append(n_diff(a, b))
    assert max(same_family) <= 4  # each member is at most 2 changes away from the prototype
    assert np.mean(same_family) < 3 < np.mean(other_family)


def test_distractors_have_looks_no_identity_has():
    d = Difficulty()
    cams = make_cameras(5, 3, d)
    _, used = make_identities(5, 10, 10, d)
    for i in range(20):
        extra = plan_extra(5, i, False, cams, used, d)
        assert extra.pid == 0 and extra.person.attrs.signature() not in used


def _drawn(attrs: Attributes, view: str) -> np.ndarray:
    img = Image.new("RGB", (64, 128), (255, 255, 255))
    person = make_person(attrs, np.random.default_rng(0), shade_jitter=0.0)
    draw_person(ImageDraw.Draw(img), person, view, 32, 6, 116, 0.3)
    return np.asarray(img, dtype=np.int16)


def test_a_backpack_shows_from_behind_not_from_the_front():
    base = Attributes(upper=4, upper2=1, pattern="solid", sleeves="long", lower=0, lower_kind="trousers",
                      shoes=0, skin=1, hair=0, hair_long=False, bag="none", bag_colour=7, bag_side="left", body=2)
    with_bag = Attributes(**{**base.__dict__, "bag": "backpack"})
    changed = {v: int((np.abs(_drawn(with_bag, v) - _drawn(base, v)).sum(-1) > 30).sum()) for v in ("front", "back")}
    assert changed["front"] > 0  # the straps
    assert changed["back"] > 4 * changed["front"], changed


# ---------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("change, name", [
    (dict(cameras_per_id=[3, 2]), "cameras_per_id"),
    (dict(cameras_per_id=[2, 5]), "cameras_per_id"),  # more than cameras=4
    (dict(cameras_per_id=[1, 2]), "cameras_per_id"),  # no cross-camera match possible
    (dict(cameras_per_id=3), "cameras_per_id"),
    (dict(images_per_camera=[0, 2]), "images_per_camera"),
    (dict(multi_query_images=[3, 1]), "multi_query_images"),
    (dict(cameras=10), "cameras"),
    (dict(cameras=1), "cameras"),
    (dict(train_ids=1), "train_ids"),
    (dict(test_ids=True), "test_ids"),
    (dict(train_ids=9000, test_ids=1000), "train_ids"),
    (dict(distractors=-1), "distractors"),
    (dict(junk=2.5), "junk"),
    (dict(height=8), "height"),
    (dict(seed=-1), "seed"),
    (dict(difficulty=Difficulty(family_size=0)), "family_size"),
    (dict(difficulty=Difficulty(occlusion_prob=1.5)), "occlusion_prob"),
])
def test_bad_arguments_raise_naming_the_argument(tmp_path, change, name):
    with pytest.raises(ValueError, match=name):
        _make(tmp_path / "bad", **change)
    assert not (tmp_path / "bad").exists()
