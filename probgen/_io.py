"""Files that are either the old good version or the new one: atomic writes and versioned checkpoints.

A process can die at any moment: a pre-empted job, Ctrl-C, the out-of-memory killer. Writing a
checkpoint in place (``torch.save(state, path)``) then leaves a truncated file where the last good
one was. Every file probgen writes goes through :func:`atomic_write` instead: the bytes go to a
temporary file in the same folder, are flushed and synced to disk, and the temporary file is
renamed over the target, which POSIX makes atomic. A kill at any moment leaves either the previous
file or the new one, never a mixture; the folder is synced too, so the rename survives a crash.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are ``torch.save`` dicts that also
record what they hold (``kind``), the probgen version that wrote them and a format number, so that
loading a file of another kind, an older format or a foreign file fails with a message that says so.
This module imports nothing from probgen.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "atomic_write",
    "atomic_path",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "FORMAT_VERSION",
]

#: The checkpoint format written by this probgen; bump it when a checkpoint's layout changes.
FORMAT_VERSION = 1
#: The key of a checkpoint's header in the saved dict.
_HEADER = "__probgen__"


class CheckpointError(ValueError):
    """A file is not a readable probgen checkpoint of the expected kind and format."""


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (NetCDF, matplotlib);
    when the block ends without an error it is synced and renamed over ``path``.

    :param suffix: the temporary file's extension, for writers that choose a format by it (``".png"``).
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=folder)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        _sync_folder(folder)
    finally:
        if temporary.exists():
            temporary.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` atomically: ``write(handle)`` fills a temporary file, which then replaces ``path``.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write(target, lambda f: f.write(b"hello"))
    >>> target.read_bytes()
    b'hello'
    """
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        write(handle)
        handle.flush()


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("probgen")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str], *, kind: str) -> None:
    """Save ``payload`` (tensors, numbers, strings, nested dicts) atomically with a header.

    :param str kind: what the file holds, e.g. ``"SVIState"``; :func:`load_checkpoint` checks it.
    """
    header = {"kind": kind, "format": FORMAT_VERSION, "probgen_version": _version()}
    buffer = io.BytesIO()
    torch.save({_HEADER: header, **payload}, buffer)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def load_checkpoint(path: str | os.PathLike[str], *, kind: str, weights_only: bool = True) -> dict[str, Any]:
    """The payload of a checkpoint written by :func:`save_checkpoint` with the same ``kind``.

    :param bool weights_only: load with ``torch.load(weights_only=True)``, which runs no code from the file.
    :raises FileNotFoundError: if there is no file.
    :raises CheckpointError: for a truncated or foreign file, another kind, or another format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}.")
    try:
        raw = torch.load(path, weights_only=weights_only, map_location="cpu")
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "it may be truncated or not written by probgen."
        ) from error
    header = raw.get(_HEADER) if isinstance(raw, dict) else None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{str(path)!r} is not a probgen checkpoint of this version (it has no probgen header); "
            "files written by probgen before checkpoints were versioned cannot be resumed."
        )
    if header.get("kind") != kind:
        raise CheckpointError(f"{str(path)!r} holds a {header.get('kind')!r}, not a {kind!r}.")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format {header.get('format')} (written by probgen "
            f"{header.get('probgen_version')}); this probgen reads format {FORMAT_VERSION}."
        )
    return {key: value for key, value in raw.items() if key != _HEADER}
