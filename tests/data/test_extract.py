"""Safe extraction: good archives come out byte for byte; a single unsafe member rejects the whole archive."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from reid.data.extract import ArchiveError, UnsafeArchiveError, list_members, safe_extract

GOOD = {
    "Market-1501-v15.09.15/query/0001_c1s1_000015_00.jpg": b"\xff\xd8query",
    "Market-1501-v15.09.15/bounding_box_test/-1_c2s1_000001_00.jpg": b"\xff\xd8junk",
    "Market-1501-v15.09.15/readme.txt": b"hello",
}


def make_zip(path: Path, members: list[tuple[str, bytes]], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        for name, target in (links or {}).items():  # a zip symlink: mode S_IFLNK, the target as data
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, entries: list[tuple], mode: str = "w:gz") -> Path:
    """entries: (name, bytes) for files, (name, 'sym'|'hard', target), (name, 'fifo'|'chr')."""
    with tarfile.open(path, mode) as tf:
        for entry in entries:
            info = tarfile.TarInfo(entry[0])
            if len(entry) == 2 and isinstance(entry[1], bytes):
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
                continue
            kind = entry[1]
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                         "chr": tarfile.CHRTYPE, "dir": tarfile.DIRTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = entry[2]
            tf.addfile(info)
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_zip_round_trip(tmp_path):
    archive = make_zip(tmp_path / "a.zip", list(GOOD.items()))
    out = safe_extract(archive, tmp_path / "out")
    assert tree(out) == GOOD


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"),
                                         ("w:xz", ".tar.xz")])
def test_tar_round_trip(tmp_path, mode, suffix):
    archive = make_tar(tmp_path / f"a{suffix}", list(GOOD.items()), mode)
    assert tree(safe_extract(archive, tmp_path / "out")) == GOOD


def test_format_is_sniffed_when_the_suffix_says_nothing(tmp_path):
    archive = make_tar(tmp_path / "a.tgz", list(GOOD.items()))
    archive = archive.rename(tmp_path / "download.bin")
    assert tree(safe_extract(archive, tmp_path / "out")) == GOOD
    (tmp_path / "plain.bin").write_bytes(b"just bytes" * 100)
    with pytest.raises(ArchiveError, match="neither a zip nor a tar"):
        safe_extract(tmp_path / "plain.bin", tmp_path / "out2")


@pytest.mark.parametrize("bad", ["../escaped.txt", "ok/../../escaped.txt", "/tmp/escaped.txt",
                                 "C:/escaped.txt", "ok\\..\\..\\escaped.txt"])
def test_zip_escaping_its_folder_is_rejected_whole(tmp_path, bad):
    # good members first: checking must finish before anything is written
    archive = make_zip(tmp_path / "evil.zip", list(GOOD.items()) + [(bad, b"pwned")])
    dest = tmp_path / "work" / "out"
    with pytest.raises(UnsafeArchiveError, match="rejected, nothing extracted") as err:
        safe_extract(archive, dest)
    assert repr(bad) in str(err.value)
    assert not dest.exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_every_problem_is_listed(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", [("../a", b""), ("/b", b""), ("c/../../d", b"")])
    with pytest.raises(UnsafeArchiveError, match="3 unsafe member") as err:
        list_members(archive)
    for name in ("'../a'", "'/b'", "'c/../../d'"):
        assert name in str(err.value)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "b/../../../outside", "../../a", "..\\outside"])
def test_symlink_pointing_outside_is_rejected(tmp_path, target):
    archive = make_tar(tmp_path / "evil.tar.gz", list(GOOD.items()) + [("a/link", "sym", target)])
    with pytest.raises(UnsafeArchiveError, match="symbolic link 'a/link'"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_symlink_pointing_outside_is_rejected(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", list(GOOD.items()), links={"x/link": "../../../etc"})
    with pytest.raises(UnsafeArchiveError, match="points outside"):
        safe_extract(archive, tmp_path / "out")


def test_links_inside_the_folder_are_kept(tmp_path):
    archive = make_tar(tmp_path / "ok.tar", [("a/b/file.txt", b"data"), ("a/c/link", "sym", "../b/file.txt"),
                                             ("a/hard", "hard", "a/b/file.txt")], mode="w")
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "a/c/link").is_symlink() and (out / "a/c/link").read_bytes() == b"data"
    assert not (out / "a/hard").is_symlink() and (out / "a/hard").read_bytes() == b"data"


def test_paths_through_links_are_rejected(tmp_path):
    # 'a/b/L' -> '../..' is inside, and 'a/b/L/../../..' lexically too, but on disk it is the parent
    # of the folder; the rule "no path goes through a link" stops both forms of the trick
    through_target = [("a/b/f", b"x"), ("a/b/L", "sym", "../.."), ("M", "sym", "a/b/L/../../../outside")]
    through_name = [("d", b"x"), ("L", "sym", "."), ("L/evil", b"x")]
    write_via_link = [("L", "sym", "sub"), ("sub", "dir"), ("L/x", b"x")]
    for i, entries in enumerate([through_target, through_name, write_via_link]):
        archive = make_tar(tmp_path / f"t{i}.tar", entries, mode="w")
        with pytest.raises(UnsafeArchiveError, match="goes through the symbolic link"):
            safe_extract(archive, tmp_path / f"out{i}")


def test_hardlink_outside_or_to_nothing_is_rejected(tmp_path):
    for i, target in enumerate(["../x", "/etc/passwd", "missing.txt"]):
        archive = make_tar(tmp_path / f"h{i}.tar", [("f.txt", b"x"), ("h", "hard", target)], mode="w")
        with pytest.raises(UnsafeArchiveError, match="hard link"):
            safe_extract(archive, tmp_path / f"out{i}")


@pytest.mark.parametrize("kind", ["fifo", "chr"])
def test_special_files_are_rejected(tmp_path, kind):
    archive = make_tar(tmp_path / "dev.tar", [("f.txt", b"x"), ("dev", kind)], mode="w")
    with pytest.raises(UnsafeArchiveError, match="special file"):
        safe_extract(archive, tmp_path / "out")


def test_duplicate_names_are_rejected(tmp_path):
    archive = make_tar(tmp_path / "dup.tar", [("a/Img.jpg", b"1"), ("a/img.jpg", b"2")], mode="w")
    with pytest.raises(UnsafeArchiveError, match="duplicate name"):
        safe_extract(archive, tmp_path / "out")


def test_truncated_archives_are_reported_and_leave_nothing(tmp_path):
    big = [(f"d/{i}.bin", bytes(range(256)) * 40 + i.to_bytes(4, "little")) for i in range(30)]
    z = make_zip(tmp_path / "t.zip", big)
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        safe_extract(z, tmp_path / "out_zip")
    t = make_tar(tmp_path / "t.tar.gz", big)
    t.write_bytes(t.read_bytes()[: t.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        safe_extract(t, tmp_path / "out_tar")
    assert not (tmp_path / "out_zip").exists() and not (tmp_path / "out_tar").exists()


def test_corrupt_zip_member_data_removes_the_partial_output(tmp_path):
    z = make_zip(tmp_path / "c.zip", [("a.bin", b"A" * 5000), ("b.bin", b"B" * 5000)])
    with zipfile.ZipFile(z) as zf:
        offset = zf.getinfo("b.bin").header_offset + 30 + len("b.bin")  # start of b.bin's data
    raw = bytearray(z.read_bytes())
    raw[offset] ^= 0xFF  # stored member: flipping a byte breaks its CRC
    z.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="corrupt"):
        safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_target_must_be_new_or_empty(tmp_path):
    archive = make_zip(tmp_path / "a.zip", list(GOOD.items()))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        safe_extract(archive, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert tree(safe_extract(archive, tmp_path / "empty")) == GOOD
