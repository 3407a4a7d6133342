"""Tiny synthetic copies of each dataset kind's *native* layout (a few images each), shared by
test_kinds.py and test_kinds_workflow.py."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from PIL import Image

from reid.data.market import format_market_name


def image_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    img = Image.new("RGB", (8, 16), ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    img.putpixel((seed % 8, seed % 16), (255, 0, 128))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def zip_of(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return path


def msmt17_files(version: str = "MSMT17_V1") -> dict[str, bytes]:
    """MSMT17's native layout in miniature: training labels 0-1 (list_train + list_val), test labels
    0-2 (one query each in camera 3, gallery in cameras 4 and 15), names <pid>_<index>_<camera>_...jpg."""
    train_dir, test_dir = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}[version]
    files, lists, k = {}, {"list_train.txt": [], "list_val.txt": [], "list_query.txt": [], "list_gallery.txt": []}, 0

    def add(base, lst, label, index, camera):
        nonlocal k
        rel = f"{label:04d}/{label:04d}_{index:03d}_{camera:02d}_0303morning_{k:04d}_0.jpg"
        files[f"{version}/{base}/{rel}"] = image_bytes(k)
        lists[lst].append(f"{rel} {label}")
        k += 1

    add(train_dir, "list_train.txt", 0, 0, 1)
    add(train_dir, "list_train.txt", 0, 1, 2)
    add(train_dir, "list_train.txt", 1, 0, 2)
    add(train_dir, "list_val.txt", 1, 1, 1)
    for label in range(3):
        add(test_dir, "list_query.txt", label, 0, 3)
        add(test_dir, "list_gallery.txt", label, 1, 4)
        add(test_dir, "list_gallery.txt", label, 2, 15)
    for name, lines in lists.items():
        files[f"{version}/{name}"] = ("\n".join(lines) + "\n").encode()
    return files


def cuhk03np_files() -> dict[str, bytes]:
    """cuhk03-np/{labeled,detected}/ in miniature: training pids 1-2, test pids 3-4, PNG images named
    <pid>_c<camera>_<index>.png, one query per test pid and camera."""
    files, k = {}, 0
    for subset in ("labeled", "detected"):
        for sub, pids in (("bounding_box_train", (1, 2)), ("query", (3, 4)), ("bounding_box_test", (3, 4))):
            for pid in pids:
                for cam in (1, 2):
                    index = 1 if sub == "query" else cam + 2 * (sub == "bounding_box_test")
                    files[f"cuhk03-np/{subset}/{sub}/{pid:04d}_c{cam}_{index}.png"] = image_bytes(k, "PNG")
                    k += 1
    return files


def market_like_files() -> dict[str, bytes]:
    """A tiny dataset already in Market-1501 layout (what most users hold as an extracted folder)."""
    files, k = {}, 0
    for sub, pids, cams in (("bounding_box_train", (1, 2), (1, 2)), ("query", (3, 4), (1,)),
                            ("bounding_box_test", (3, 4), (2, 3))):
        for pid in pids:
            for cam in cams:
                files[f"{sub}/{format_market_name(pid, cam, 1, 100 + k, 0)}"] = image_bytes(k)
                k += 1
    files["bounding_box_test/" + format_market_name(0, 1, 1, 900, 0)] = image_bytes(99)  # a distractor
    return files
