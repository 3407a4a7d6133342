"""The embedded default dataset: a procedural person re-ID dataset in Market-1501 layout.

``synthesize(root, ...)`` writes ``bounding_box_train/``, ``bounding_box_test/`` (with
distractors ``0000_...`` and junk ``-1_...``), ``query/`` and ``gt_bbox/`` under ``root``.

- Identities are attribute sets (clothing colours and patterns, shoes, skin, hair, bag and its
  side, body proportions). They come in *families* that share most attributes and differ in one
  or two: the hard negatives.
- Cameras differ in colour cast, saturation, brightness, background, person scale and dominant
  viewpoint; each pass of a person through a camera (a *track*) has one viewpoint and lighting,
  and its frames differ in walking phase, crop, blur, occlusion, noise and JPEG quality.
- Market-1501 protocol: each test identity has one query per camera it appears in, the rest of
  its images in the gallery, and always a gallery image in another camera than each query;
  ``gt_bbox/`` holds tight "hand-drawn" crops (bbox index 00) of other frames of each query's
  track, for multi-query evaluation.

Every random choice comes from a ``numpy.random.Generator`` seeded by (seed, stream, keys of the
thing drawn), so the same arguments give byte-identical files, and one identity's images do not
change when, say, the number of distractors does.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reid.data.market import (
    DISTRACTOR_PID,
    GALLERY_DIR,
    JUNK_PID,
    MULTI_QUERY_DIR,
    QUERY_DIR,
    TRAIN_DIR,
    format_market_name,
)
from reid.data.synthetic_draw import (
    CASTS,
    FLOORS,
    VIEWS,
    WALLS,
    Camera,
    Difficulty,
    Person,
    Shot,
    encode_jpeg,
    make_camera,
    make_person,
    mutate,
    random_attributes,
    random_person,
    render,
)

__all__ = ["synthesize", "Difficulty", "MAX_CAMERAS"]

MAX_CAMERAS = len(CASTS)  # 9, also the most a Market-1501 name can hold
SEQUENCES = 6  # Market-1501 cameras have sequences s1..s6
FRAME_SPAN = 150_000  # frame numbers lie in [0, FRAME_SPAN + track length)
FRAME_STEP = (3, 25)  # frames between two crops of one track
STRIDE_PERIOD = (18.0, 30.0)  # frames per walking cycle
MAX_PER_CAMERA = 200  # images_per_camera / multi_query_images upper bound (keeps frames 6-digit)
DISTRACTOR_WIDE = 0.25  # share of distractors that are background-heavy crops
JUNK_EMPTY = 0.35  # share of junk that is background only (the rest: fragments of people)
HAND_BBOX = 0  # Market-1501 marks hand-drawn gt_bbox boxes with bbox index 00

# independent random streams: (seed, stream, keys...) seeds one Generator
_CAMERA, _FAMILY, _IDENTITY, _PLAN, _TRACK, _IMAGE, _DISTRACTOR, _JUNK = range(1, 9)
_TRAIN, _TEST = 0, 1


def _rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *keys])


@dataclass
class _Planned:
    """One image to write: where it goes, its name fields, and what to draw."""

    folder: str
    pid: int
    cam: int
    seq: int
    frame: int
    rng_keys: tuple  # stream and keys of the image's own Generator
    style: str
    person: Person | None
    view: str
    stride: float
    light: float
    bbox: int = -1


# --------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------


def _int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r}: expected an integer")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name}={value!r}: must be {bound}")
    return int(value)


def _range(name: str, value, lo: int, hi: int) -> tuple[int, int]:
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected [min, max]") from None
    a, b = _int(f"{name}[0]", a, lo, hi), _int(f"{name}[1]", b, lo, hi)
    if a > b:
        raise ValueError(f"{name}={list(value)!r}: min {a} > max {b}")
    return a, b


def _check_difficulty(d: Difficulty) -> None:
    if d.family_size < 1:
        raise ValueError(f"difficulty.family_size={d.family_size!r}: must be >= 1")
    lo, hi = d.family_changes
    if not 1 <= lo <= hi:
        raise ValueError(f"difficulty.family_changes={d.family_changes!r}: need 1 <= min <= max")
    q0, q1 = d.jpeg_quality
    if not 1 <= q0 <= q1 <= 100:
        raise ValueError(f"difficulty.jpeg_quality={d.jpeg_quality!r}: need 1 <= min <= max <= 100")
    for name in ("view_purity", "occlusion_prob", "background_people_prob", "blur_prob", "lowres_prob"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise ValueError(f"difficulty.{name}={getattr(d, name)!r}: must be a probability in [0, 1]")


# --------------------------------------------------------------------------------------------
# the world: cameras and identities
# --------------------------------------------------------------------------------------------


def make_cameras(seed: int, cameras: int, difficulty: Difficulty) -> dict[int, Camera]:
    """Cameras 1..n with distinct colour casts and walls and spread dominant viewpoints."""
    rng = _rng(seed, _CAMERA)
    casts = rng.permutation(len(CASTS))
    walls = rng.permutation(len(WALLS))
    floors = rng.permutation(np.resize(np.arange(len(FLOORS)), MAX_CAMERAS))
    view0 = int(rng.integers(len(VIEWS)))
    return {
        c: make_camera(c, _rng(seed, _CAMERA, c), CASTS[casts[c - 1]], WALLS[walls[c - 1]],
                       FLOORS[floors[c - 1]], (view0 + c) % len(VIEWS), difficulty)
        for c in range(1, cameras + 1)
    }


def make_identities(seed: int, train_ids: int, test_ids: int, difficulty: Difficulty) -> tuple[dict, set]:
    """pid -> Person for train pids 1..train_ids and test pids after them, in families of
    ``difficulty.family_size``; also the set of attribute signatures in use."""
    people: dict[int, Person] = {}
    used: set = set()
    lo, hi = difficulty.family_changes
    for split, first, count in ((_TRAIN, 1, train_ids), (_TEST, train_ids + 1, test_ids)):
        for j in range(count):
            pid = first + j
            family = j // difficulty.family_size
            proto = random_attributes(_rng(seed, _FAMILY, split, family))
            for attempt in range(1000):
                rng = _rng(seed, _IDENTITY, pid, attempt)
                n_changes = int(rng.integers(lo, hi + 1))
                attrs = mutate(proto, rng, min(n_changes, 12)) if attempt < 50 else random_attributes(rng)
                if attrs.signature() not in used:
                    break
            else:  # pragma: no cover - the attribute space holds millions of looks
                raise RuntimeError(f"could not find a new look for pid {pid}")
            used.add(attrs.signature())
            people[pid] = make_person(attrs, rng, difficulty.shade_jitter)
    return people, used


def _unused_person(rng: np.random.Generator, used: set, shade_jitter: float) -> Person:
    """A random person whose attribute set no identity has (for distractors)."""
    for _ in range(1000):
        attrs = random_attributes(rng)
        if attrs.signature() not in used:
            return make_person(attrs, rng, shade_jitter)
    raise RuntimeError("no unused attribute set found for a distractor")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# the plan: which image goes where, under which name
# --------------------------------------------------------------------------------------------


def _track(seed: int, pid: int, cam: Camera, n_frames: int, difficulty: Difficulty):
    """One pass of a person through a camera: sequence, frames, viewpoint, lighting, gait."""
    rng = _rng(seed, _TRACK, pid, cam.index)
    seq = int(rng.integers(1, SEQUENCES + 1))
    view = VIEWS[int(rng.choice(len(VIEWS), p=np.asarray(cam.view_probs)))]
    light = float(1 + rng.normal(0, difficulty.track_light))
    phase = float(rng.uniform(0, 2 * math.pi))
    period = float(rng.uniform(*STRIDE_PERIOD))
    steps = rng.integers(FRAME_STEP[0], FRAME_STEP[1] + 1, size=n_frames)
    frames = [int(v) for v in int(rng.integers(0, FRAME_SPAN)) + np.cumsum(steps)]
    strides = [math.sin(2 * math.pi * fr / period + phase) for fr in frames]
    return seq, view, light, frames, strides, rng


def _query_cameras(counts: dict[int, int], rng: np.random.Generator) -> list[int]:
    """Cameras that give a query: every camera, unless that would leave some query without a
    gallery image in another camera. With >= 2 cameras holding >= 2 images all can; otherwise the
    camera with most images (ties: random) keeps all its images in the gallery."""
    cams = sorted(counts)
    if sum(1 for c in cams if counts[c] >= 2) >= 2:
        return cams
    most = max(counts.values())
    candidates = [c for c in cams if counts[c] == most]
    anchor = candidates[int(rng.integers(len(candidates)))]
    return [c for c in cams if c != anchor]


def plan_identity(seed: int, pid: int, person: Person, is_test: bool, cameras: dict[int, Camera],
                  cameras_per_id, images_per_camera, multi_query_images, difficulty: Difficulty) -> list[_Planned]:
    rng = _rng(seed, _PLAN, pid)
    n_cams = int(rng.integers(cameras_per_id[0], cameras_per_id[1] + 1))
    cams = sorted(int(c) + 1 for c in rng.choice(len(cameras), size=n_cams, replace=False))
    counts = {c: int(rng.integers(images_per_camera[0], images_per_camera[1] + 1)) for c in cams}
    gt_counts = {c: int(rng.integers(multi_query_images[0], multi_query_images[1] + 1)) for c in cams}
    query_cams = set(_query_cameras(counts, rng)) if is_test else set()
    out = []
    for c in cams:
        n_gt = gt_counts[c] if c in query_cams else 0
        seq, view, light, frames, strides, trng = _track(seed, pid, cameras[c], counts[c] + n_gt, difficulty)
        hand = set(int(i) for i in trng.choice(len(frames), size=n_gt, replace=False)) if n_gt else set()
        detected = [i for i in range(len(frames)) if i not in hand]
        query_at = detected[int(trng.integers(len(detected)))] if c in query_cams else -1
        for i, (frame, stride) in enumerate(zip(frames, strides)):
            if i in hand:
                folder, style = MULTI_QUERY_DIR, "hand"
            elif i == query_at:
                folder, style = QUERY_DIR, "detected"
            else:
                folder, style = (GALLERY_DIR if is_test else TRAIN_DIR), "detected"
            out.append(_Planned(folder, pid, c, seq, frame, (_IMAGE, pid, c, i), style, person, view,
                                stride, light, HAND_BBOX if style == "hand" else -1))
    return out


def plan_extra(seed: int, index: int, junk: bool, cameras: dict[int, Camera], used: set,
               difficulty: Difficulty) -> _Planned:
    """Distractor ``index`` (pid 0: a person of an unused look, or a background-heavy crop) or
    junk ``index`` (pid -1: background only or a fragment of a person)."""
    stream = _JUNK if junk else _DISTRACTOR
    rng = _rng(seed, stream, index)
    cam = cameras[int(rng.integers(len(cameras))) + 1]
    seq = int(rng.integers(1, SEQUENCES + 1))
    frame = int(rng.integers(0, FRAME_SPAN))
    view = VIEWS[int(rng.choice(len(VIEWS), p=np.asarray(cam.view_probs)))]
    if junk:
        person = random_person(rng, difficulty.shade_jitter)
        style = "empty" if rng.random() < JUNK_EMPTY else "fragment"
        pid = JUNK_PID
    else:
        person = _unused_person(rng, used, difficulty.shade_jitter)
        style = "wide" if rng.random() < DISTRACTOR_WIDE else "detected"
        pid = DISTRACTOR_PID
    return _Planned(GALLERY_DIR, pid, cam.index, seq, frame, (stream, index, 0, 0), style, person, view,
                    float(rng.uniform(-1, 1)), float(1 + rng.normal(0, difficulty.track_light)))


def _assign_bbox_indices(planned: list[_Planned]) -> None:
    """Detected boxes get indices 01.. per (camera, sequence, frame), as several people detected
    in one frame would; this also keeps pid-0 and pid--1 names unique."""
    groups: dict[tuple, list[_Planned]] = {}
    for p in planned:
        if p.bbox == -1:
            groups.setdefault((p.cam, p.seq, p.frame), []).append(p)
    for key, members in groups.items():
        if len(members) > 99:  # pragma: no cover - needs ~10^5 images per camera
            raise RuntimeError(f"more than 99 boxes in camera/sequence/frame {key}")
        for k, p in enumerate(sorted(members, key=lambda p: (p.pid, p.rng_keys)), start=1):
            p.bbox = k


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def _checked_arguments(seed, train_ids, test_ids, cameras, cameras_per_id, images_per_camera, distractors, junk,
                       multi_query_images, height, width, difficulty):
    """``synthesize``'s arguments checked, in its order: (seed, cameras, train_ids, test_ids, cameras_per_id,
    images_per_camera, multi_query_images, distractors, junk, height, width, difficulty), the ranges as
    (min, max) and ``difficulty`` None as ``Difficulty()``. Raises ValueError naming the argument at fault."""
    seed = _int("seed", seed, 0)
    cameras = _int("cameras", cameras, 2, MAX_CAMERAS)
    train_ids = _int("train_ids", train_ids, 2)
    test_ids = _int("test_ids", test_ids, 2)
    if train_ids + test_ids > 9999:
        raise ValueError(f"train_ids + test_ids = {train_ids + test_ids}: Market-1501 names hold at most 9999 pids")
    cameras_per_id = _range("cameras_per_id", cameras_per_id, 1, MAX_CAMERAS)
    if cameras_per_id[0] < 2:
        raise ValueError(f"cameras_per_id={list(cameras_per_id)!r}: min must be >= 2 "
                         "(every query needs a gallery match in another camera)")
    if cameras_per_id[1] > cameras:
        raise ValueError(f"cameras_per_id={list(cameras_per_id)!r}: max exceeds cameras={cameras}")
    images_per_camera = _range("images_per_camera", images_per_camera, 1, MAX_PER_CAMERA)
    multi_query_images = _range("multi_query_images", multi_query_images, 1, MAX_PER_CAMERA)
    distractors = _int("distractors", distractors, 0)
    junk = _int("junk", junk, 0)
    height = _int("height", height, 16)
    width = _int("width", width, 8)
    difficulty = difficulty or Difficulty()
    _check_difficulty(difficulty)
    return (seed, cameras, train_ids, test_ids, cameras_per_id, images_per_camera, multi_query_images, distractors,
            junk, height, width, difficulty)


def _prepare_folders(root: Path, folders: tuple, overwrite: bool) -> None:
    """Create the split ``folders`` under ``root``; one that already holds files raises FileExistsError,
    unless ``overwrite`` (then it is deleted first)."""
    for sub in folders:
        d = root / sub
        if d.exists() and any(d.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{d}: already holds files; remove it or pass overwrite=True")
            shutil.rmtree(d)
    for sub in folders:
        (root / sub).mkdir(parents=True, exist_ok=True)


def synthesize(root: str | Path, *, seed: int, train_ids: int, test_ids: int, cameras: int,
               cameras_per_id, images_per_camera, distractors: int, junk: int, multi_query_images,
               height: int, width: int, difficulty: Difficulty | None = None,
               overwrite: bool = False) -> dict:
    """Write the synthetic dataset under ``root`` in Market-1501 layout; return counts.

    ``cameras_per_id``, ``images_per_camera`` and ``multi_query_images`` are [min, max] (inclusive).
    ``difficulty`` holds the knobs of how hard the data is (see ``Difficulty``).
    Raises ValueError naming the argument at fault; FileExistsError if a split folder already
    holds files (unless ``overwrite``, which deletes those four folders first).

    Returns the image counts per split (``train``, ``gallery`` (distractors and junk included),
    ``query``, ``multi_query``) and the sizes it was given (``train_ids``, ``test_ids``,
    ``distractors``, ``junk``, ``cameras``, ``height``, ``width``).
    """
    (seed, cameras, train_ids, test_ids, cameras_per_id, images_per_camera, multi_query_images, distractors,
     junk, height, width, difficulty) = _checked_arguments(
        seed, train_ids, test_ids, cameras, cameras_per_id, images_per_camera, distractors, junk,
        multi_query_images, height, width, difficulty)
    root = Path(root)
    folders = (TRAIN_DIR, GALLERY_DIR, QUERY_DIR, MULTI_QUERY_DIR)
    _prepare_folders(root, folders, overwrite)

    cams = make_cameras(seed, cameras, difficulty)
    people, used = make_identities(seed, train_ids, test_ids, difficulty)
    planned: list[_Planned] = []
    for pid, person in people.items():
        planned += plan_identity(seed, pid, person, pid > train_ids, cams, cameras_per_id, images_per_camera,
                                 multi_query_images, difficulty)
    planned += [plan_extra(seed, i, False, cams, used, difficulty) for i in range(distractors)]
    planned += [plan_extra(seed, i, True, cams, used, difficulty) for i in range(junk)]
    _assign_bbox_indices(planned)

    names: set = set()
    counts = {sub: 0 for sub in folders}
    q_lo, q_hi = difficulty.jpeg_quality
    for p in planned:
        name = format_market_name(p.pid, p.cam, p.seq, p.frame, p.bbox)
        if (p.folder, name) in names:  # pragma: no cover - guarded by the plan
            raise RuntimeError(f"duplicate image name {p.folder}/{name}")
        names.add((p.folder, name))
        rng = _rng(seed, *p.rng_keys)
        img = render(rng, Shot(p.style, p.person, p.view, p.stride, p.light), cams[p.cam], height, width, difficulty)
        (root / p.folder / name).write_bytes(encode_jpeg(img, int(rng.integers(q_lo, q_hi + 1))))
        counts[p.folder] += 1

    return {
        "train": counts[TRAIN_DIR],
        "gallery": counts[GALLERY_DIR],
        "query": counts[QUERY_DIR],
        "multi_query": counts[MULTI_QUERY_DIR],
        "train_ids": train_ids,
        "test_ids": test_ids,
        "distractors": distractors,
        "junk": junk,
        "cameras": cameras,
        "height": height,
        "width": width,
    }


def synthesize_dataset(out: str | Path, params: dict, manifest: str | Path | None = None) -> dict:
    """``reid synthesize``: the synthetic dataset of config ``synthetic`` (``params``, its
    ``difficulty`` knobs included) written to ``out`` in Market-1501 layout; returns its summary.

    The new dataset is built beside ``out`` and swapped in only once complete (reid.data.install),
    so a failure keeps the previous one. Without ``manifest`` an existing ``out`` is refused
    (FileExistsError); with it, ``out`` is replaced and the manifest written afterwards.
    """
    import sys

    from reid.data.install import install_failed_note, replace_dir, work_dir, write_manifest

    given, params = params, dict(params)
    knobs = params.pop("difficulty", {}) or {}
    difficulty = Difficulty(**{k: tuple(v) if isinstance(v, list) else v for k, v in knobs.items()})
    out = Path(out)
    if out.exists() and not manifest:
        raise FileExistsError(f"{out}: already exists; remove it first to regenerate (or give --manifest)")
    existed = out.is_dir()
    work = work_dir(out, "synthesize")
    try:
        summary = synthesize(work / "staged", **params, difficulty=difficulty)
        replace_dir(work / "staged", out, work)  # the previous dataset stays until this one is complete
    except BaseException:
        print(install_failed_note(out, existed), file=sys.stderr)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if manifest:
        write_manifest(out, manifest, {"synthetic": given})
    return summary

