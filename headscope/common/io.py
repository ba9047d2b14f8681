"""Strict JSON and atomic file writes, shared by every writer of results.

- :func:`strict_json_dumps`: JSON that every strict parser accepts: NaN and ±inf become
  ``null`` (Python's ``json`` would write the non-standard ``NaN``/``Infinity``);
  tensors and arrays become lists, paths and other objects strings.
- :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_path`: write to a
  temporary file in the destination's folder, then ``os.replace`` it onto the destination,
  so a crash or a concurrent reader never sees a half-written file.

Standard library only, so that the CLI can import it without loading torch.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, tuples/sets as lists, keys as strings.

    Objects with ``tolist()`` (tensors, numpy arrays and scalars) are converted first;
    anything else that JSON cannot hold is left for ``default`` of :func:`strict_json_dumps`.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(k)): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return json_safe(obj.tolist())
    return obj


def _default(obj: Any) -> Any:
    return str(obj)


def strict_json_dumps(obj: Any, *, indent: int | None = 1) -> str:
    """``json.dumps`` that never writes ``NaN``/``Infinity``: non-finite floats become ``null``.

    The text round-trips through ``json.loads(text, parse_constant=reject)``; read ``null``
    back as NaN where a number was expected (``HeadResult.load`` does).
    """
    return json.dumps(json_safe(obj), indent=indent, default=_default, allow_nan=False)


def nan_for_null(obj: Any) -> Any:
    """Inverse of the NaN → ``null`` step for numeric arrays: every None in nested lists becomes NaN."""
    if obj is None:
        return float("nan")
    if isinstance(obj, list):
        return [nan_for_null(v) for v in obj]
    return obj


@functools.cache
def _file_mode() -> int:
    """``0o666`` less the process umask (read once: reading it means setting it briefly)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``.

    For writers that need a file name (``safetensors.save_file``, ``fig.write_html``). The
    temporary name keeps ``path``'s suffix, so tools that read the format from it still
    work. On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON (:func:`strict_json_dumps`) plus a final newline, atomically."""
    return atomic_write_text(path, strict_json_dumps(obj, indent=indent) + "\n")
