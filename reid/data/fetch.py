"""Get a file (dataset archive, pretrained weights) into resources/: a file the user placed there, or a
download from a configured URL; checksum-verified either way.

Guarantees:
- a download goes to a temporary file in the same folder, is checked (length against Content-Length,
  then checksums) and only then renamed into place atomically: a partial or wrong download never sits
  at the final path;
- a file that fails its checksum is moved aside to ``<name>.bad-<md5 prefix>``, never deleted, and the
  error names the file and both sums;
- a missing file with no URL raises MissingArchiveError saying where to get it and the exact path to
  put it at.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from reid import io

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_HEX = {"md5": re.compile(r"^[0-9a-fA-F]{32}$"), "sha256": re.compile(r"^[0-9a-fA-F]{64}$")}
# torch.hub / torchvision name their files <arch>-<first hex digits of the SHA-256>.pth
_TORCHVISION_HASH = re.compile(r"^.+-(?P<prefix>[0-9a-f]{8,64})\.pth?$")
_SCHEMES = ("http", "https", "file")


class MissingArchiveError(FileNotFoundError):
    """The file is not in resources/ and no URL is configured to download it."""


class ChecksumError(ValueError):
    """A file's digest differs from the configured one. ``moved_to`` is where the file now lies."""

    def __init__(self, message: str, *, path: Path, moved_to: Path | None, mismatches: list[tuple[str, str, str]]):
        super().__init__(message)
        self.path = path
        self.moved_to = moved_to
        self.mismatches = mismatches  # (algorithm, expected, actual)


class DownloadError(OSError):
    """A download failed (HTTP error, connection lost, truncated body). Nothing is left at the final path."""


def file_digests(path: str | Path) -> dict[str, str]:
    """MD5 and SHA-256 of a file, in one pass (lower-case hex)."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def torchvision_sha256_prefix(name: str | Path) -> str | None:
    """The SHA-256 prefix torchvision writes into its weight file names ('resnet50-0676ba61.pth' ->
    '0676ba61'), or None when the name does not follow that convention (at least 8 hex digits)."""
    m = _TORCHVISION_HASH.match(Path(name).name)
    return m["prefix"] if m else None


def _expected_sums(md5: str | None, sha256: str | None, sha256_prefix: str | None) -> list[tuple[str, str]]:
    out = []
    for algo, value in (("md5", md5), ("sha256", sha256)):
        if value is None:
            continue
        if not isinstance(value, str) or not _HEX[algo].match(value):
            digits = len(hashlib.new(algo).hexdigest())
            raise ValueError(f"configured {algo} {value!r} is not a {digits}-digit hex string")
        out.append((algo, value.lower()))
    if sha256_prefix is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256_prefix):
            raise ValueError(f"sha256 prefix {sha256_prefix!r} is not 8 to 64 hex digits")
        if sha256 is None:  # a full sum, when given, already says more
            out.append(("sha256 prefix", sha256_prefix.lower()))
    return out


def _mismatches(digests: dict[str, str], expected: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    bad = []
    for algo, value in expected:
        if algo == "sha256 prefix":
            actual = digests["sha256"][: len(value)]
        else:
            actual = digests[algo]
        if actual != value:
            bad.append((algo, value, actual))
    return bad


def _move_aside(path: Path, name_for: Path, md5: str) -> Path:
    """Rename ``path`` to ``<name_for>.bad-<md5[:8]>`` (plus a counter if taken): keeps the evidence."""
    base = name_for.with_name(f"{name_for.name}.bad-{md5[:8]}")
    target, n = base, 1
    while target.exists():
        target = base.with_name(f"{base.name}-{n}")
        n += 1
    os.replace(path, target)
    io.fsync_dir(target.parent)
    return target


def _checksum_error(
    path: Path, moved_to: Path | None, bad: list[tuple[str, str, str]], hint: str, what: str | None = None
) -> ChecksumError:
    sums = "; ".join(f"{algo}: expected {exp}, got {act}" for algo, exp, act in bad)
    where = f" It was moved aside to {moved_to} (not deleted)." if moved_to else ""
    return ChecksumError(
        f"checksum mismatch for {what or path}: {sums}.{where}{hint}", path=path, moved_to=moved_to, mismatches=bad
    )


def verify_checksum(
    path: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    move_aside: bool = True,
) -> dict[str, str]:
    """Check ``path`` against the given sums; return its digests ({'md5', 'sha256'}).

    With no sum given nothing is checked (the digests are still returned, to be recorded).
    On a mismatch the file is moved aside (unless ``move_aside`` is False) and ChecksumError is raised.
    """
    path = Path(path)
    expected = _expected_sums(md5, sha256, sha256_prefix)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    digests = file_digests(path)
    bad = _mismatches(digests, expected)
    if bad:
        moved = _move_aside(path, path, digests["md5"]) if move_aside else None
        raise _checksum_error(path, moved, bad, "")
    return digests


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"file name {name!r} must be a plain file name (no folders) under resources/")


def download(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    timeout: float = 60.0,
) -> dict[str, str]:
    """Download ``url`` to ``dest`` atomically; return the digests.

    The body streams into a temporary file beside ``dest``; its length is checked against
    Content-Length, its checksums against the given ones, and only then is it renamed to ``dest``.
    On a checksum mismatch the complete download is kept as ``<dest>.bad-<md5 prefix>``; on any other
    failure the temporary file is removed. ``dest`` is never touched unless the download is good.
    """
    dest = Path(dest)
    expected = _expected_sums(md5, sha256, sha256_prefix)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"URL {url!r}: scheme {scheme or '(none)'!r} not supported (use one of {', '.join(_SCHEMES)})")
    # reid.io.atomic_path: the body goes to a temporary file beside dest, renamed over it (and the
    # folder fsynced) only when the with-block ends normally; on any error the temporary file is
    # removed (a bad download has been moved aside before that)
    with io.atomic_path(dest) as tmp:
        md5_h, sha_h = hashlib.md5(), hashlib.sha256()
        received = 0
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    length = int(length) if length is not None and length.strip().isdigit() else None
                    log.info("downloading %s (%s bytes) to %s", url, length if length is not None else "unknown", dest)
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        md5_h.update(chunk)
                        sha_h.update(chunk)
                        received += len(chunk)
            except urllib.error.HTTPError as e:
                raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
            except urllib.error.URLError as e:
                raise DownloadError(f"download of {url} failed: {e.reason}") from e
            except http.client.IncompleteRead as e:
                raise DownloadError(
                    f"download of {url} was cut off after {received + len(e.partial)} bytes"
                    + (f" of {length}" if length is not None else "")
                    + f"; nothing was written to {dest}"
                ) from e
            except (OSError, http.client.HTTPException) as e:  # reset connection, timeout, bad status line
                raise DownloadError(
                    f"download of {url} failed after {received} bytes: {e}; nothing was written to {dest}"
                ) from e
            if length is not None and received != length:
                raise DownloadError(
                    f"download of {url} is truncated: received {received} of {length} bytes (Content-Length); "
                    f"nothing was written to {dest}"
                )
        digests = {"md5": md5_h.hexdigest(), "sha256": sha_h.hexdigest()}
        bad = _mismatches(digests, expected)
        if bad:
            moved = _move_aside(tmp, dest, digests["md5"])
            raise _checksum_error(
                dest,
                moved,
                bad,
                f" It was not installed at {dest}; check the URL and the configured sums.",
                what=f"the download of {url}",
            )
    log.info("downloaded %s: %d bytes, md5 %s", dest, received, digests["md5"])
    return digests


def fetch_file(
    name: str,
    resources_dir: str | Path,
    *,
    url: str | None,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    how_to_get: str = "",
    timeout: float = 60.0,
) -> Path:
    """The verified file ``resources_dir/name``: the one the user placed there, else downloaded from ``url``.

    A placed file that fails its checksum is moved aside and ChecksumError raised (the next run
    downloads afresh when a URL is configured). With no checksum configured the file is accepted
    as is and its digests are logged, to be pinned in the config.
    """
    _check_name(name)
    resources_dir = Path(resources_dir)
    path = resources_dir / name
    _expected_sums(md5, sha256, sha256_prefix)  # reject a malformed configured sum before any work
    if path.exists():
        if not path.is_file():
            raise ValueError(f"{path} exists but is not a regular file")
        try:
            digests = verify_checksum(path, md5=md5, sha256=sha256, sha256_prefix=sha256_prefix)
        except ChecksumError as e:
            hint = (
                f" Run again to download it afresh from {url}."
                if url
                else f" Put the correct file at {path.resolve()}."
            )
            raise _checksum_error(path, e.moved_to, e.mismatches, hint) from None
        _log_unverified(path, digests, md5, sha256, sha256_prefix)
        return path
    if not url:
        raise MissingArchiveError(
            f"{name} not found: expected it at {path.resolve()} and no download URL is configured. "
            + (how_to_get.rstrip() + " " if how_to_get else "")
            + f"Put the file at {path.resolve()} (or configure its url) and run again."
        )
    digests = download(url, path, md5=md5, sha256=sha256, sha256_prefix=sha256_prefix, timeout=timeout)
    _log_unverified(path, digests, md5, sha256, sha256_prefix)
    return path


def _log_unverified(path: Path, digests: dict[str, str], md5, sha256, sha256_prefix) -> None:
    if md5 is None and sha256 is None and sha256_prefix is None:
        log.warning(
            "%s: no checksum configured, accepted unverified (md5 %s, sha256 %s)",
            path,
            digests["md5"],
            digests["sha256"],
        )


def fetch_spec(spec: dict, resources: Path) -> Path:
    """``reid fetch``: the file a rule's ``--spec`` names, under ``resources``, present and verified.

    ``spec`` is a dataset's config section ``dataset.<name>`` (source ``archive``: its archive,
    checked against md5/sha256) or, for ImageNet weights, ``{"archive", "url", "sha256"}`` (without a
    sha256, torchvision's hash-prefix rule checks the file). Raises reid.config.ConfigError for a
    spec that is neither, and as fetch_file.
    """
    from reid.config import ConfigError, validate_section
    from reid.data.kinds import kind_of

    if "source" in spec or "kind" in spec:  # a dataset archive: config 'dataset.<name>'
        validate_section(spec, "$defs.dataset", "--spec (config 'dataset.<name>')")
        if spec["source"] != "archive":
            raise ConfigError(f"--spec (config 'dataset.<name>'): fetch needs source 'archive', got {spec['source']!r}")
    else:  # ImageNet weights: what the fetch_weights rule passes
        unknown = sorted(set(spec) - {"archive", "url", "sha256"})
        if unknown or not isinstance(spec.get("archive"), str) or not spec["archive"]:
            raise ConfigError("--spec (weights): expected keys 'archive' (a file name, required), 'url', 'sha256'; "
                              + (f"unexpected key(s) {', '.join(unknown)}" if unknown else "'archive' is missing"))
    name = spec["archive"]
    if spec.get("source"):
        how_to_get = kind_of(spec).how_to_get
        prefix = None
    else:
        how_to_get = (f"ImageNet weights: download {spec['url']}" if spec.get("url") else
                      "ImageNet weights: torchvision's files are listed in its documentation "
                      "(e.g. https://download.pytorch.org/models/resnet50-0676ba61.pth)")
        prefix = None if spec.get("sha256") else torchvision_sha256_prefix(name)
    return fetch_file(name, Path(resources), url=spec.get("url"), md5=spec.get("md5"),
                      sha256=spec.get("sha256"), sha256_prefix=prefix, how_to_get=how_to_get)

