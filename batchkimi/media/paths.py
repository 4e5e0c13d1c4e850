"""Local media paths: resolved against the media root, and kept inside it.

A manifest names files relative to its own folder (or the job's ``media_root``). A
path that leads outside that root, whether by ``..``, an absolute path or a symlink, is
refused unless the job sets ``allow_outside_media_root``: a manifest from elsewhere must
not be able to send ``/etc/passwd`` to the service.
"""

from __future__ import annotations

import re
from pathlib import Path

from batchkimi.media.limits import IMAGE_TYPES

REMOTE_PREFIXES = ("http://", "https://", "data:", "oss://")
LOCAL_PREFIX = "file://"


class MediaPathError(Exception):
    """A local media reference that cannot be used: the problem and the fix."""

    def __init__(self, problem: str, fix: str, *, outside: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.outside = outside  # it exists, but outside the media root


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(value: str) -> bool:
    return value.startswith(REMOTE_PREFIXES)


def unsupported_scheme(value: str) -> str | None:
    """The scheme of a URL the service cannot fetch (``ftp://``, ``s3://``), or None
    for what it can, a local path, or a ``file://`` path."""
    match = _SCHEME.match(value)
    if match is None or is_remote(value) or value.startswith(LOCAL_PREFIX):
        return None
    return match.group(0)


def local_path(uri: str) -> Path:
    """The path of a ``file://`` URI made by ``MediaRoot.uri``."""
    return Path(uri.removeprefix(LOCAL_PREFIX))


def _natural_key(path: Path) -> list[int | str]:
    """frame2 before frame10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


class MediaRoot:
    """Where local media may come from."""

    def __init__(self, root: Path, *, allow_outside: bool = False) -> None:
        self.root = root.resolve()
        self.allow_outside = allow_outside

    def resolve(self, value: str) -> Path:
        """The real path ``value`` names: it exists, and it is inside the root."""
        text = (
            value.removeprefix(LOCAL_PREFIX)
            if value.startswith(LOCAL_PREFIX)
            else value
        )
        given = Path(text)
        path = given if given.is_absolute() else self.root / given
        try:
            real = path.resolve(
                strict=True
            )  # symlinks followed: no escape through them
        except (OSError, RuntimeError):
            raise MediaPathError(
                f"{value!r} does not exist (looked for {path})",
                f"Paths resolve against {self.root}; fix the path or set media_root",
            ) from None
        if not self.allow_outside and not real.is_relative_to(self.root):
            raise MediaPathError(
                f"{value!r} is outside the media root {self.root}",
                "Move the file under the media root, set media_root to a folder that "
                "holds it, or set allow_outside_media_root = true if you trust this "
                "manifest",
                outside=True,
            )
        return real

    def file(self, value: str) -> Path:
        real = self.resolve(value)
        if not real.is_file():
            raise MediaPathError(f"{value!r} is not a file", "Name a file")
        return real

    def frames(self, value: str) -> list[Path]:
        """The image files of a folder of frames, in natural order."""
        folder = self.resolve(value)
        if not folder.is_dir():
            raise MediaPathError(
                f"{value!r} is not a folder of frames",
                "Give a folder of images, or a list of frame paths",
            )
        found = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_TYPES),
            key=_natural_key,
        )
        return [p.resolve() for p in found]

    @staticmethod
    def uri(path: Path) -> str:
        return LOCAL_PREFIX + str(path)
