"""Writing files so that a crash never leaves half of one behind, and only where they belong: a name
that comes from data (a record's id, a task's name) is made a plain file name before it is used."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from evosearch.errors import EvosearchError

MAX_FILENAME = 100  # characters of a name built from data; file systems allow 255 bytes
_NOT_IN_FILENAMES = re.compile(r"[^A-Za-z0-9._-]+")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write through a temporary file and ``os.replace``: readers never see half a file."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """As :func:`atomic_write_text`. ``os.replace`` replaces a symbolic link at ``path`` itself, so
    the file it pointed to is never written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def safe_filename(text: str) -> str:
    """``text`` as a file name that stays in its directory: every run of characters other than
    ASCII letters, digits, ``.``, ``_`` and ``-`` becomes ``_``, leading dots go (no ``..``, no hidden
    file), at most :data:`MAX_FILENAME` characters, ``_`` where nothing is left."""
    return _NOT_IN_FILENAMES.sub("_", text).lstrip(".")[:MAX_FILENAME] or "_"


def child_path(directory: str | os.PathLike, name: str) -> Path:
    """``directory / name``, checked to stay inside ``directory`` once symbolic links are followed:
    a run directory from elsewhere may hold a link (``best -> ~/.ssh``) that would have evosearch
    write, append to or delete files outside it. Raises :class:`EvosearchError` where it leads out, or
    where ``directory`` is a file."""
    directory = Path(directory)
    path = directory / name  # a name with "/" or "..", or "/" at its start, also ends up elsewhere
    try:
        inside = path.resolve().parent == directory.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a loop of symbolic links
        inside = False
    if not inside:
        raise EvosearchError(f"{path} leads outside {directory} (a symbolic link?); refusing to follow it")
    if directory.exists() and not directory.is_dir():
        raise EvosearchError(f"{directory} is not a directory; {name} cannot go there")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
