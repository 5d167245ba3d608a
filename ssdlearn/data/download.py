"""Download and unpack PASCAL VOC and MS COCO, for users (tests never touch the network).
Lessons 07 and 08 (VOC and COCO runs).

    python -m ssdlearn data voc2007 --root data/

VOC tars unpack to ``root/VOCdevkit/VOC{year}`` (give ``VOCDataset`` the root); COCO zips
unpack to ``root/coco/{train2017,val2017,annotations}`` (give ``COCODataset`` root/coco).
Every archive's MD5 is checked. Extraction refuses an archive with a member that would land
outside the target folder (an absolute path, ``..``, a link pointing out): archives from
the internet are untrusted input.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Archive", "DATASETS", "UnsafeArchiveError", "download", "extract"]


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its URL, its MD5, and the folder under the data root it unpacks in."""

    url: str
    md5: str
    subdir: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# host.robots.ox.ac.uk, the VOC site's download host, is often down; thor is the same
# server's mirror that torchvision downloads from. COCO's official links are plain http:
# the MD5 check is what guards the content.
_VOC = "https://thor.robots.ox.ac.uk/pascal/VOC"
_COCO = "http://images.cocodataset.org"
_VOC2007_TRAINVAL = Archive(f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar",
                            "c52e279531787c972589f7e41ab4ae64")
_VOC2007_TEST = Archive(f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar",
                        "b6e924de25625d8de591ea690078ad9f")
_VOC2012_TRAINVAL = Archive(f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar",
                            "6cd6e144f989b92b3379bac3b3de84fd")
_COCO_TRAIN = Archive(f"{_COCO}/zips/train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2", "coco")
_COCO_VAL = Archive(f"{_COCO}/zips/val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80", "coco")
_COCO_ANNOTATIONS = Archive(f"{_COCO}/annotations/annotations_trainval2017.zip",
                            "f4bbac642086de4f52a3fdda2de5fa2c", "coco")

DATASETS: dict[str, tuple[Archive, ...]] = {
    "voc2007": (_VOC2007_TRAINVAL, _VOC2007_TEST),  # 0.9 GB; trainval 5011, test 4952 images
    "voc2012": (_VOC2012_TRAINVAL,),  # 2 GB; trainval 11540 images with boxes
    "coco2017": (_COCO_ANNOTATIONS, _COCO_VAL, _COCO_TRAIN),  # 19 GB
    "coco2017-val": (_COCO_ANNOTATIONS, _COCO_VAL),  # 1 GB: 5000 images, to evaluate
}


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the folder it is extracted into."""


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` with a progress line; the file appears only once whole
    and verified, so an interrupted download is never mistaken for a finished one."""
    partial = dest.with_name(dest.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as file:
            total = int(response.headers.get("Content-Length") or 0)
            done, shown = 0, 0.0
            while chunk := response.read(1 << 20):
                file.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() - shown > 0.5 or done == total:
                    shown = time.monotonic()
                    of = f" / {total / 1e6:,.0f} MB ({100 * done / total:.0f}%)" if total else " MB"
                    print(f"\r  {dest.name}: {done / 1e6:,.0f}{of}", end="", flush=True)
        print()
        if digest.hexdigest() != md5:
            raise OSError(f"{url} downloaded with MD5 {digest.hexdigest()}, expected {md5}; "
                          "the download is corrupt or the file changed: try again")
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)


def download(name: str, root: str | Path, *, extract_archives: bool = True) -> Path:
    """Download (and unpack) the archives of dataset ``name`` under ``root``.

    Archives already downloaded with the right MD5 are not fetched again, nor unpacked again
    when their marker file says they were. Archives are kept next to what they unpack to.

    Args:
        name: a key of ``DATASETS``: "voc2007", "voc2012", "coco2017" or "coco2017-val".
        root: the data folder.
    Returns:
        The folder to give the dataset class as ``root``.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {', '.join(DATASETS)}, got {name!r}")
    root = Path(root)
    for archive in DATASETS[name]:
        folder = root / archive.subdir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / archive.filename
        if path.is_file() and _md5(path) == archive.md5:
            print(f"{path} already downloaded")
        else:
            print(f"downloading {archive.url}")
            _fetch(archive.url, path, archive.md5)
        marker = folder / f".{archive.filename}.extracted"
        if extract_archives and not marker.exists():
            print(f"extracting {path} into {folder}")
            extract(path, folder)
            marker.touch()
    return root / DATASETS[name][0].subdir


# ---- safe extraction -----------------------------------------------------------------


def _is_within(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _check_members(archive: Path, root: Path, members: list[tuple[str, str, str]]) -> None:
    """Refuse the archive unless every member stays inside ``root``, before writing anything.

    ``members``: ``(name, kind, link)`` with kind "file", "dir", "symlink", "hardlink" or
    "other" (devices, FIFOs: refused). A symlink's target is relative to its own folder, a
    hard link's to the archive's top. A member may not go through a link of the archive
    (``link/file``): where it would land depends on the link, a classic escape.
    """
    real_root = os.path.realpath(root)
    links: set[str] = set()

    def refuse(name: str, reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"refusing to extract {archive}: member {name!r} {reason}; nothing was extracted"
        )

    def check_path(name: str, path: str, what: str) -> str:
        if posixpath.isabs(path) or path.startswith("\\") or (len(path) > 1 and path[1] == ":"):
            raise refuse(name, f"{what} an absolute path ({path!r})")
        normal = posixpath.normpath(path)
        if normal == ".." or normal.startswith("../"):
            raise refuse(name, f"{what} outside {root} ({path!r} goes up with '..')")
        # realpath also follows links already on disk under root.
        if not _is_within(os.path.realpath(os.path.join(real_root, normal)), real_root):
            raise refuse(name, f"{what} outside {root} (through a link already there)")
        return normal

    for name, kind, link in members:
        normal = check_path(name, name, "is")
        parts = normal.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise refuse(name, f"goes through the link {'/'.join(parts[:i])!r} in the archive")
        if kind == "symlink":  # relative targets start from the link's own folder
            target = posixpath.join(posixpath.dirname(normal), link)  # keeps an absolute link
            check_path(name, target, "is a symbolic link to")
            links.add(normal)
        elif kind == "hardlink":
            check_path(name, link, "is a hard link to")
            links.add(normal)
        elif kind == "other":
            raise refuse(name, "is a device or FIFO, not a file, folder or link")


def _extract_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        _check_members(archive, root, [
            (m.name, "dir" if m.isdir() else "file" if m.isfile() else "symlink" if m.issym()
             else "hardlink" if m.islnk() else "other", m.linkname)
            for m in members
        ])
        if hasattr(tarfile, "data_filter"):  # the standard library's own checks as well
            try:
                tar.extractall(root, members=members, filter="data")
            except tarfile.FilterError as err:
                raise UnsafeArchiveError(f"refusing to extract {archive}: {err}") from err
        else:
            tar.extractall(root, members=members)


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        links = {}
        for info in infos:
            if stat.S_ISLNK(info.external_attr >> 16):  # unix mode in the high 16 bits
                links[info.filename] = zf.read(info).decode("utf-8", errors="replace")
        _check_members(archive, root, [
            (i.filename, "symlink" if i.filename in links else "dir" if i.is_dir() else "file",
             links.get(i.filename, "")) for i in infos
        ])
        real_root = os.path.realpath(root)
        for info in infos:
            dest = os.path.join(real_root, posixpath.normpath(info.filename))
            # Checked again as we go: links made by earlier members are on disk now.
            if not _is_within(os.path.realpath(dest), real_root):
                raise UnsafeArchiveError(f"refusing to extract {archive}: member "
                                         f"{info.filename!r} is outside {root}")
            if info.filename in links:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                target = os.path.realpath(os.path.join(os.path.dirname(dest),
                                                       links[info.filename]))
                if not _is_within(target, real_root):
                    raise UnsafeArchiveError(f"refusing to extract {archive}: member "
                                             f"{info.filename!r} links outside {root}")
                if os.path.lexists(dest):  # extracting again over an earlier run
                    os.remove(dest)
                os.symlink(links[info.filename], dest)
            else:
                zf.extract(info, real_root)


def extract(archive: str | Path, root: str | Path) -> None:
    """Unpack a tar (any compression) or zip ``archive`` into the folder ``root``.

    Raises:
        UnsafeArchiveError (a ValueError) naming the member, before anything is written, when
        a member would land outside ``root``: an absolute path, a path that climbs out with
        ``..``, a symbolic or hard link pointing outside, a path through a link of the
        archive, or a device file. Links already under ``root`` that point elsewhere count
        as outside. (A contrived chain of links that only escapes once earlier links exist
        on disk is stopped during extraction instead, after part of the archive is out.)
        ValueError when ``archive`` is neither a tar nor a zip.
    """
    archive, root = Path(archive), Path(root)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} not found")
    root.mkdir(parents=True, exist_ok=True)
    # The name first: sniffing alone can take a tar that ends with a zip member for a zip.
    is_zip = archive.suffix.lower() == ".zip"
    is_tar = ".tar" in archive.suffixes or archive.suffix.lower() in (".tgz", ".tbz2", ".txz")
    if is_zip or (not is_tar and zipfile.is_zipfile(archive)):
        _extract_zip(archive, root)
    elif is_tar or tarfile.is_tarfile(archive):
        _extract_tar(archive, root)
    else:
        raise ValueError(f"{archive} is neither a tar nor a zip archive")
