"""Verify a dataset in Market-1501 layout and describe it in a JSON-serialisable report.

The report (written by the CLI to results/{dataset}/dataset.json) holds, per split, the counts of
images, identities (real persons: junk pid -1 and distractors pid 0 are counted apart), the cameras,
the pid range, the image suffixes; the images that fail to decode, malformed names, unexpected
entries, duplicate names, ignored OS clutter; and, for a published dataset, the comparison with its
known split. Every entry of a split folder is accounted for (reid.data.market.scan_entries).

What fails verification (DatasetVerificationError, its message lists every problem):
- always: a missing or empty train/query/gallery folder, an entry of a split folder that is neither
  a re-ID image (any suffix) nor known OS clutter (a malformed name, a sub-folder), an image that
  does not decode (corrupt or truncated), two images of one split whose names differ only in case
  or suffix (they collide on case-insensitive filesystems, or name one image twice);
- always, because a later stage would certainly fail on it: a training split with fewer than two
  identities of real persons (pair sampling and the identification loss need two), and query and
  gallery splits in which no query has a true match (its identity in the gallery from another camera,
  the only matches the protocol scores): evaluation would have nothing to score;
- for a ``kind`` with published counts (reid.data.kinds) unless ``custom``: any count that differs.
Duplicate names *across* splits and the number of queries without a cross-camera match are
reported only (some such queries are normal: the protocol skips them).

``prepare_dataset`` (extract an archive and lay it out, then verify it here) lives in reid.data.prepare,
which imports this module (never the other way round).
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageFile

from reid.data import market
from reid.data.kinds import DatasetKind, get_kind

__all__ = ["DatasetVerificationError", "verify_dataset", "find_undecodable"]

_EVAL_SPLITS = ("train", "query", "gallery")  # duplicate names across these are reported


class DatasetVerificationError(ValueError):
    """The dataset does not pass verification. ``report`` is the full report (JSON-serialisable)."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------------------------------------- decode


@contextlib.contextmanager
def _strict_truncation():
    """PIL silently pads truncated JPEGs when LOAD_TRUNCATED_IMAGES is set (a training-time habit);
    the check must see them, so it runs with the flag off and restores it afterwards."""
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _decode_error(path: str) -> str | None:
    try:
        with Image.open(path) as im:
            # JPEG draft mode decodes at 1/8 scale: every entropy-coded byte is still read (so
            # truncation is still caught) but the IDCT work shrinks; ~1.4x faster on 128x64 images
            im.draft("RGB", (1, 1))
            im.load()
            if im.width <= 0 or im.height <= 0:
                return "image has zero size"
    except Exception as e:  # noqa: BLE001 - any failure to decode is what we report
        return f"{type(e).__name__}: {e}"
    return None


def find_undecodable(paths: list[str | Path], workers: int | None = None) -> list[tuple[str, str]]:
    """(path, error) for every image among ``paths`` that PIL cannot open and fully load.

    Runs in a thread pool: Pillow releases the GIL while decoding. Note that corrupt *entropy-coded
    data* inside an otherwise complete JPEG is only a libjpeg warning and is not detected; truncated
    files, bad headers and non-images are.
    """
    paths = [str(p) for p in paths]
    if workers is None:
        workers = min(8, 2 * (os.cpu_count() or 1))
    with _strict_truncation():
        if workers <= 1 or len(paths) < 64:
            errors = [_decode_error(p) for p in paths]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                errors = list(pool.map(_decode_error, paths, chunksize=64))
    return [(p, e) for p, e in zip(paths, errors) if e is not None]


# ---------------------------------------------------------------------------------------------- scan


def _scan_folder(root: Path, folder: Path):
    """Every entry of a split folder (reid.data.market.scan_entries, the scanner training and
    extraction use too): (records as (path relative to root, ImageName), malformed, unexpected,
    ignored clutter). Unlike market.scan_split it collects every problem instead of raising."""
    scan = market.scan_entries(folder)
    rel = lambda p: Path(p).relative_to(root).as_posix()  # noqa: E731
    records = [(rel(r.path), n) for r, n in zip(scan.records, scan.names)]
    malformed = [{"path": rel(p), "error": e} for p, e in scan.malformed]
    unexpected = [{"path": rel(p), "error": e} for p, e in scan.unexpected]
    return records, malformed, unexpected, [rel(p) for p in scan.ignored]


def _split_summary(folder: str, records) -> dict:
    real = sorted({n.pid for _, n in records if not (n.is_junk or n.is_distractor)})
    suffixes = defaultdict(int)
    for rel, _ in records:
        suffixes[Path(rel).suffix] += 1
    return {
        "suffixes": dict(sorted(suffixes.items())),
        "folder": folder,
        "images": len(records),
        "identities": len(real),
        "cameras": sorted({n.camid for _, n in records}),
        "pid_range": [real[0], real[-1]] if real else None,
        "junk": sum(n.is_junk for _, n in records),
        "distractors": sum(n.is_distractor for _, n in records),
    }


def _duplicates(names_by_split: dict[str, list[str]]):
    within = []
    for split, names in names_by_split.items():
        groups = defaultdict(list)
        for rel in names:  # same name up to case or suffix: one re-ID name for two files
            groups[Path(rel).stem.casefold()].append(rel)
        within += [sorted(g) for g in groups.values() if len(g) > 1]
    where = defaultdict(set)
    for split in _EVAL_SPLITS:
        for rel in names_by_split.get(split, []):
            where[rel.rsplit("/", 1)[-1].casefold()].add(split)
    across = [{"name": name, "splits": sorted(s)} for name, s in sorted(where.items()) if len(s) > 1]
    return within, across


def _real_pids(records) -> set[int]:
    return {n.pid for _, n in records if not (n.is_junk or n.is_distractor)}


def _queries_without_match(query, gallery) -> int:
    """Query images with no gallery image of the same identity from another camera (the Market-1501
    protocol ignores same-camera matches), i.e. queries that cannot be scored."""
    cams = defaultdict(set)
    for _, n in gallery:
        cams[n.pid].add(n.camid)
    return sum(1 for _, n in query if not (cams.get(n.pid, set()) - {n.camid}))


def _later_stage_failures(splits: dict, train, query, gallery, extra: dict) -> list[str]:
    """What would certainly make a later stage fail, found now instead of after hours of training."""
    problems = []
    if splits.get("train") and train:
        n = len(_real_pids(train))
        if n < 2:
            problems.append(f"{market.TRAIN_DIR}/ has {n} identit{'y' if n == 1 else 'ies'} of real persons "
                            f"(pid > 0): training needs at least 2 (pairs of different persons, and classes "
                            f"for the identification loss)")
    real_queries = [n for _, n in query if not (n.is_junk or n.is_distractor)]
    if splits.get("query") and splits.get("gallery") and query and gallery:
        if extra["queries_without_cross_camera_match"] == len(query) or not real_queries:
            problems.append(
                f"no query has a true match: none of the {len(query)} images in {market.QUERY_DIR}/ has an "
                f"image of its identity in {market.GALLERY_DIR}/ taken by another camera (the only matches "
                f"the Market-1501 protocol scores), so evaluation would have nothing to score"
            )
    return problems


def _compare(known: DatasetKind, splits: dict, found_extra: dict, records_by_split: dict) -> list[dict]:
    rows = []

    def row(field, expected, found):
        rows.append({"field": field, "expected": expected, "found": found, "ok": expected == found})

    for split, counts in known.splits.items():
        s = splits.get(split)
        for attr in ("images", "identities", "junk", "distractors"):
            if getattr(counts, attr) is not None:  # None: not published, reported only
                row(f"{split}.{attr}", getattr(counts, attr), s[attr] if s else None)
        if counts.cameras is not None:
            row(f"{split}.cameras", list(range(1, counts.cameras + 1)), s["cameras"] if s else None)
    evaluated = [records_by_split.get(split, []) for split in _EVAL_SPLITS]
    if known.total_identities is not None:
        row("identities_in_all_splits", known.total_identities, len(set().union(*map(_real_pids, evaluated))))
    if known.total_cameras is not None:
        row("cameras_in_all_splits", list(range(1, known.total_cameras + 1)),
            sorted({n.camid for recs in evaluated for _, n in recs}))
    if known.has_multi_query:
        mq = splits.get("multi_query")
        row("multi_query.present", True, bool(mq and mq["images"] > 0))
    row("identities_in_train_and_test", 0, found_extra["identities_in_train_and_test"])
    row("query_identities_missing_from_gallery", 0, found_extra["query_identities_missing_from_gallery"])
    return rows


def verify_dataset(
    root: str | Path, kind: str | None, custom: bool, *, decode: bool = True, workers: int | None = None
) -> dict:
    """Check the dataset at ``root`` (Market-1501 layout) and return its report.

    ``kind`` None (synthetic or a dataset of your own) or ``custom`` True: counts are reported, not
    compared. Raises DatasetVerificationError (with ``.report``) when anything fails; see the module doc.
    """
    root = Path(root)
    known = get_kind(kind) if kind is not None else None
    if known is not None and not known.checks_counts:
        known = None  # a kind without published counts (custom): structure only
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder missing")
    problems, splits, records_by_split, malformed, unexpected, ignored = _scan_splits(root)
    problems += [f"malformed image name: {m['error']}" for m in malformed]
    problems += [f"unexpected entry: {u['error']}" for u in unexpected]

    undecodable = []
    if decode:
        paths = [root / rel for recs in records_by_split.values() for rel, _ in recs]
        undecodable = [
            {"path": Path(p).relative_to(root).as_posix(), "error": err} for p, err in find_undecodable(paths, workers)
        ]
        problems += [f"image does not decode: {root / u['path']}: {u['error']}" for u in undecodable]

    within, across = _duplicates({s: [rel for rel, _ in r] for s, r in records_by_split.items()})
    problems += [f"image names differ only in case or suffix (they name one image twice, or collide on "
                 f"case-insensitive filesystems): {g}" for g in within]

    train = records_by_split.get("train", [])
    query = records_by_split.get("query", [])
    gallery = records_by_split.get("gallery", [])
    extra = {
        "identities_in_train_and_test": len(_real_pids(train) & (_real_pids(query) | _real_pids(gallery))),
        "query_identities_missing_from_gallery": len(_real_pids(query) - _real_pids(gallery)),
        "queries_without_cross_camera_match": _queries_without_match(query, gallery),
    }
    problems += _later_stage_failures(splits, train, query, gallery, extra)

    comparison = None
    if known is not None:
        comparison = _compare(known, splits, extra, records_by_split)
        if not custom:
            problems += [
                f"{r['field']}: expected {r['expected']}, found {r['found']}" for r in comparison if not r["ok"]
            ]

    report = {
        "root": str(root),
        "kind": kind,
        "custom": bool(custom),
        "ok": not problems,
        "problems": problems,
        "splits": splits,
        **extra,
        "decode_checked": decode,
        "undecodable_images": undecodable,
        "malformed_names": malformed,
        "unexpected_entries": unexpected,
        "duplicate_names": {"within_split": within, "across_splits": across},
        "ignored_files": ignored,
        "known_split": None
        if known is None
        else {"kind": known.name, "name": known.display_name, "checked": not custom, "comparison": comparison},
    }
    if problems:
        _raise_failed(root, report, problems, known is not None and not custom
                      and any(r["ok"] is False for r in comparison))
    return report


def _scan_splits(root: Path) -> tuple[list[str], dict[str, dict | None], dict[str, list],
                                      list[dict], list[dict], list[str]]:
    """Scan each split folder under ``root`` (Market-1501 layout).

    Returns (problems, split summaries, records by split, malformed names, unexpected entries, ignored
    files); a missing optional split is left out, a missing required one is a problem with summary None.
    """
    problems: list[str] = []
    splits: dict[str, dict | None] = {}
    records_by_split: dict[str, list] = {}
    malformed: list[dict] = []
    unexpected: list[dict] = []
    ignored: list[str] = []
    for split, sub in market.SPLIT_DIRS.items():
        folder = root / sub
        if not folder.is_dir():
            if split in market.REQUIRED_SPLITS:
                problems.append(f"missing split folder {sub}/ under {root}")
                splits[split] = None
            continue
        recs, bad, odd, clutter = _scan_folder(root, folder)
        records_by_split[split] = recs
        malformed += bad
        unexpected += odd
        ignored += clutter
        splits[split] = _split_summary(sub, recs)
        splits[split]["ignored_files"] = len(clutter)
        if split in market.REQUIRED_SPLITS and not recs and not bad:
            problems.append(f"split folder {sub}/ holds no images")
    return problems, splits, records_by_split, malformed, unexpected, ignored


def _raise_failed(root: Path, report: dict, problems: list[str], counts_differ: bool) -> None:
    """Raise DatasetVerificationError listing the first 50 ``problems``; ``counts_differ`` (a known
    dataset's counts checked and not matched) adds the hint to set ``custom: true``."""
    listed = "\n  ".join(problems[:50])
    more = f"\n  ... and {len(problems) - 50} more (see the report)" if len(problems) > 50 else ""
    hint = ("\nIf this is a deliberately modified dataset, set `custom: true` for it in config.yaml."
            if counts_differ else "")
    raise DatasetVerificationError(f"{root}: dataset verification failed:\n  {listed}{more}{hint}", report)


# ---------------------------------------------------------------------------------------------- the verify step


def failed_report_path(report: str | Path) -> Path:
    """Where a failed verification writes its report: ``dataset.failed.json`` beside ``dataset.json``.

    Not the rule's declared output, which Snakemake deletes when the job fails."""
    report = Path(report)
    return report.with_name(f"{report.stem}.failed{report.suffix or '.json'}")


def write_failed_report(error: DatasetVerificationError, path: Path) -> None:
    """Write a DatasetVerificationError's report to ``path`` and name it in the error's message."""
    from reid.files.dataset_report import write_dataset_report

    report = {**error.report, "ok": False}
    write_dataset_report(path, report)
    error.args = (f"{error.args[0]}\nThe full report (undecodable images, malformed names, ...) is in {path}",)


def remove_stale_failed_report(path: Path) -> None:
    if path.exists():
        path.unlink()  # a report of a failure this run has fixed would mislead
        print(f"{path}: removed (the report of an earlier failed verification)")


def verify_into(dataset: str, spec: dict, data: Path, report_path: Path, mean_image: Path,
                manifest: str | Path | None = None) -> int:
    """``reid verify``: verify ``data`` (config section ``spec`` = ``dataset.<name>``), check it against
    its ``manifest`` when given, write the report ``report_path`` and the training mean image;
    returns the number of training images the mean is taken over.

    A failed verification raises DatasetVerificationError after writing its full report to
    :func:`failed_report_path`; a later success removes that stale report.
    """
    from reid.data.market import TRAIN_DIR, scan_split
    from reid.data.transforms import compute_mean_image
    from reid.files.mean_image import write_mean_image
    from reid.files.dataset_report import write_dataset_report

    kind = None if spec["source"] == "synthetic" else spec.get("kind")
    failed = failed_report_path(report_path)
    try:
        report = verify_dataset(Path(data), kind, bool(spec.get("custom", False)))
    except DatasetVerificationError as e:
        e.report["dataset"] = dataset
        write_failed_report(e, failed)
        raise
    if manifest:
        from reid.data.install import check_manifest

        # a dataset that verifies but is not what its rule installed (edited by hand since) stops here
        check_manifest(data, manifest)
    report["dataset"] = dataset
    train = [r.path for r in scan_split(Path(data) / TRAIN_DIR) if r.pid > 0]
    write_mean_image(compute_mean_image(train), mean_image)
    write_dataset_report(report_path, report)
    remove_stale_failed_report(failed)
    return len(train)

