"""Download an archive with resume and verification, and unpack it atomically.

``<dest>.part`` holds the bytes received so far and ``<dest>.part.json`` the server's
validators (ETag / Last-Modified) and the total size. A new attempt asks for the missing
bytes with ``Range`` and ``If-Range``: a server that answers 206 is appended to, one that
answers 200 (no range support, or the file changed) restarts from zero. The finished file
is verified (size; SHA-256 when known; zip CRCs before unpacking) and only then renamed
to ``<dest>``. A complete file that fails verification is moved to ``<dest>.corrupt`` so
the next attempt starts afresh. Unpacking goes to a hidden temporary folder beside the
target and is renamed into place, so a folder either appears whole or not at all.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from fewshot_bench.atomic import rename_durably, write_text
from fewshot_bench.errors import DataError

LEO_URL = "http://storage.googleapis.com/leo-embeddings/embeddings.zip"  # the LEO authors' README
CHUNK = 1 << 20
TIMEOUT_S = 60
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class ArchiveError(DataError):
    """An archive that cannot be read or fails its CRC checks."""


@dataclass
class Downloaded:
    """A verified download: where it is, its size and SHA-256, and how many bytes this attempt fetched."""

    path: Path
    size: int
    sha256: str
    fetched: int
    resumed_from: int


def _read_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _open(url: str, offset: int, meta: dict) -> http.client.HTTPResponse | None:
    """Open ``url`` from byte ``offset``; None when the server says the range is already complete."""
    headers = {"User-Agent": "fewshot-bench"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:  # the server sends the whole file instead if it changed since
            headers["If-Range"] = validator
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset and offset == meta.get("total"):
            return None  # everything was received before; only verification is left
        raise DataError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot reach {url}: {reason}; check the address (--url) and your connection") from None


def _sha256(path: Path, progress: bool) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc="verifying", disable=not progress) as bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _reject(part: Path, dest: Path, why: str) -> DataError:
    """Move a complete but bad file aside (so the next attempt starts afresh) and describe it."""
    bad = dest.with_name(dest.name + ".corrupt")
    os.replace(part, bad)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
    return DataError(f"{why}; it was moved to {bad} and not unpacked; run the command again to download it afresh")


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = False,
) -> Downloaded:
    """Fetch ``url`` to ``dest``, resuming ``dest.part`` if present, and verify it.

    Raises :class:`DataError` when the transfer breaks (the partial file is kept for the
    next attempt) or the result does not verify (it is moved to ``dest.corrupt``).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    meta_path = part.with_name(part.name + ".json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    meta = _read_meta(meta_path) if part.exists() else {}
    if meta.get("url") not in (None, url):  # a partial file of another address cannot be resumed
        part.unlink(missing_ok=True)
        meta = {}
    offset = part.stat().st_size if part.exists() else 0
    resumed_from = offset
    resp = _open(url, offset, meta)
    fetched = 0
    if resp is not None:
        with resp:
            total = None
            if resp.status == 206:
                m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    got = resp.headers.get("Content-Range")
                    raise DataError(f"{url} answered a resume from byte {offset} with the range {got!r}")
                total = None if m.group(3) == "*" else int(m.group(3))
            else:  # 200: the whole file (first attempt, no range support, or it changed)
                offset = resumed_from = 0
                length = resp.headers.get("Content-Length")
                total = int(length) if length is not None else None
            meta = {
                "url": url,
                "total": total,
                "etag": resp.headers.get("ETag"),
                "last_modified": resp.headers.get("Last-Modified"),
            }
            write_text(meta_path, json.dumps(meta), "download state")
            with open(part, "ab" if offset else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, disable=not progress
            ) as bar:
                try:
                    while chunk := resp.read(CHUNK):
                        f.write(chunk)
                        fetched += len(chunk)
                        bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as exc:
                    raise DataError(
                        f"download of {url} interrupted after {offset + fetched:,}"
                        f"{'' if total is None else f' of {total:,}'} bytes ({type(exc).__name__}); "
                        f"{part} is kept: run the same command again to resume"
                    ) from None
    received = part.stat().st_size
    total = meta.get("total")
    if total is not None and received < total:
        raise DataError(
            f"download of {url} interrupted after {received:,} of {total:,} bytes; "
            f"{part} is kept: run the same command again to resume"
        )
    if (total is not None and received != total) or (size is not None and received != size):
        raise _reject(part, dest, f"{url} gave {received:,} bytes, expected {size or total:,}")
    digest = _sha256(part, progress)
    if sha256 is not None and digest != sha256.lower():
        raise _reject(part, dest, f"{dest.name} has SHA-256 {digest}, expected {sha256.lower()}")
    rename_durably(part, dest)
    meta_path.unlink(missing_ok=True)
    return Downloaded(dest, received, digest, fetched, resumed_from)


def _members(archive: zipfile.ZipFile, source: Path) -> list[zipfile.ZipInfo]:
    """The archive's entries, refusing absolute paths, ``..``, links and special files."""
    infos = archive.infolist()
    for info in infos:
        p = PurePosixPath(info.filename)
        mode = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no file type
        if not p.parts or p.is_absolute() or ".." in p.parts or "\\" in info.filename or ":" in p.parts[0]:
            raise DataError(f"{source} holds an unsafe path {info.filename!r}; it was not unpacked")
        if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise DataError(f"{source} holds a link or special file {info.filename!r}; it was not unpacked")
    return infos


def unpack(archive_path: Path, dest_dir: Path, *, progress: bool = False) -> list[Path]:
    """Unpack a zip into ``dest_dir`` atomically; returns the top-level entries created.

    Every top-level entry must be new: nothing is overwritten. The zip's CRCs are checked
    while extracting into a hidden temporary folder; only a complete, valid extraction is
    renamed into place.
    """
    archive_path, dest_dir = Path(archive_path), Path(dest_dir)
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{archive_path} is not a readable zip archive ({exc})") from None
    with archive:
        infos = _members(archive, archive_path)
        tops = sorted({PurePosixPath(i.filename).parts[0] for i in infos if i.filename.strip("/")})
        existing = [dest_dir / t for t in tops if (dest_dir / t).exists()]
        if existing:
            raise DataError(f"{existing[0]} already exists; remove it or choose another --data-dir")
        need = sum(i.file_size for i in infos)
        free = shutil.disk_usage(dest_dir).free
        if need > free:
            raise DataError(f"unpacking {archive_path} needs {need:,} bytes, {dest_dir} has {free:,} free")
        tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".unpack-"))
        try:
            with tqdm(total=need, unit="B", unit_scale=True, desc="unpacking", disable=not progress) as bar:
                for info in infos:
                    target = tmp / info.filename
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, open(target, "wb") as out:  # checks the CRC at the end
                        while chunk := src.read(CHUNK):
                            out.write(chunk)
                            bar.update(len(chunk))
            for t in tops:
                os.rename(tmp / t, dest_dir / t)
        except zipfile.BadZipFile as exc:
            raise ArchiveError(f"{archive_path} is damaged ({exc})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [dest_dir / t for t in tops]


def fetch_leo(
    root: Path,
    *,
    url: str = LEO_URL,
    sha256: str | None = None,
    keep_archive: bool = False,
    progress: bool = False,
) -> tuple[Downloaded | None, list[Path]]:
    """Download the LEO embeddings archive into ``root`` and unpack it (``root/embeddings/...``).

    Returns (download, unpacked entries); (None, [existing folder]) when already unpacked.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    target = root / "embeddings"
    if target.is_dir():
        return None, [target]
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "embeddings.zip"
    archive = root / name
    got = download(url, archive, sha256=sha256, progress=progress)
    try:
        created = unpack(archive, root, progress=progress)
    except ArchiveError as exc:  # verified bytes but a bad archive: start afresh next time
        raise _reject(archive, archive, str(exc)) from None
    if not keep_archive:
        archive.unlink()
    return got, created
