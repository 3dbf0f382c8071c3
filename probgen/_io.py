"""Files that are either the old good version or the new one: atomic writes and versioned checkpoints.

A process can die at any moment: a pre-empted job, Ctrl-C, the out-of-memory killer. Writing a
checkpoint in place (``torch.save(state, path)``) then leaves a truncated file where the last good
one was. Every file probgen writes goes through :func:`atomic_write` instead: the bytes go to a
temporary file in the same folder, are flushed and synced to disk, and the temporary file is
renamed over the target, which POSIX makes atomic. A kill at any moment leaves either the previous
file or the new one, never a mixture; the folder is synced too, so the rename survives a crash.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are ``torch.save`` dicts that also
record what they hold (``"format"``), that format's version and the probgen version that wrote them,
so that loading a file of another kind, a newer format, a truncated or a foreign file fails with a
message that says so. :func:`save_text`, :func:`save_figure`, :func:`save_netcdf` and :func:`save_csv`
write the command line's outputs the same way.
This module imports nothing from probgen.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "atomic_write",
    "atomic_path",
    "save_checkpoint",
    "load_checkpoint",
    "save_text",
    "save_figure",
    "save_netcdf",
    "save_csv",
    "CheckpointError",
]


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


def save_checkpoint(
    payload: Mapping[str, Any], path: str | os.PathLike[str], *, file_format: str, version: int
) -> None:
    """Save ``payload`` (tensors, numbers, strings, nested dicts and lists) atomically, with its kind.

    The file is a ``torch.save`` dict holding the payload and ``"format"`` (what it holds, e.g.
    ``"probgen.svi_state"``), ``"version"`` (that format's version) and ``"probgen_version"``.
    """
    buffer = io.BytesIO()
    torch.save({**payload, "format": file_format, "version": version, "probgen_version": _version()}, buffer)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    file_format: str,
    version: int,
    what: str,
    old: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint` with ``file_format`` and at most ``version``.

    Loading uses ``torch.load(weights_only=True)``, so no code from the file runs.

    :param str what: what the file should hold, for messages (``"a diffusion chain"``).
    :param old: earlier formats of the same thing, mapped to what to do about them.
    :returns: the payload, ``"format"``, ``"version"`` and ``"probgen_version"`` included.
    :raises FileNotFoundError: if there is no file at ``path``.
    :raises CheckpointError: for a truncated or foreign file, a file of another kind, or one from a newer probgen.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no such file: {os.fspath(source)!r}; expected {what} saved by probgen.")
    try:
        raw = torch.load(source, weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as error:
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{source} is not {what} saved by probgen: torch.load(weights_only=True) cannot read it ({first}); "
            "it may be truncated, or not a probgen file."
        ) from error
    found = raw.get("format") if isinstance(raw, dict) else None
    if found != file_format:
        if isinstance(found, str) and old and found in old:
            raise CheckpointError(f"{source} is {old[found]}.")
        kind = (
            f"format {found!r}"
            if isinstance(found, str)
            else "no probgen format: a foreign file, or one from a probgen older than versioned files"
        )
        raise CheckpointError(f"{source} is not {what} saved by probgen (it has {kind}; expected {file_format!r}).")
    saved = raw.get("version")
    if not isinstance(saved, int) or saved > version:
        raise CheckpointError(
            f"{source} holds {what} in version {saved!r} of its format (written by probgen "
            f"{raw.get('probgen_version', 'unknown')}), newer than this probgen reads (version {version}); upgrade probgen."
        )
    return raw


def save_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def save_figure(figure: Any, path: str | os.PathLike[str], **savefig: Any) -> None:
    """``figure.savefig(path, **savefig)``, atomically (the format follows the path's extension)."""
    with atomic_path(path, suffix=Path(path).suffix) as temporary:
        figure.savefig(temporary, format=Path(path).suffix.lstrip(".") or None, **savefig)


def save_netcdf(idata: Any, path: str | os.PathLike[str]) -> None:
    """``idata.to_netcdf(path)``, atomically."""
    with atomic_path(path, suffix=".nc") as temporary:
        idata.to_netcdf(str(temporary))


def save_csv(frame: Any, path: str | os.PathLike[str], **to_csv: Any) -> None:
    """``frame.to_csv(path, **to_csv)`` (a pandas object), atomically."""
    save_text(path, frame.to_csv(**to_csv))
