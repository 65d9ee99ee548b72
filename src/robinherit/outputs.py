"""Output files replaced atomically: written beside their final name, then renamed over it.

A full disk, a killed process or an exception half way through leaves the previous file whole (a rename is atomic
on POSIX file systems) and no partial file under the final name. A leaf module: every stage that writes a file
(export, reproduce's claims and report, figures, caches) uses it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from robinherit.errors import OutputError


def replace_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then rename it to ``path``. On an ``OSError``
    (no space, no permission) the temporary file goes, ``path`` is left as it was, and an :class:`OutputError`
    names the file and the cause."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"'{path}' is a folder; pass a file path for this output, e.g. {path / 'out'}")
    # a name of this process and call alone, made with open(..., "x") so it gets the mode a plain open would
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.open("xb").close()
    except OSError as err:
        raise OutputError(f"cannot write '{path}' ({err.strerror or err}); pass a writable path") from None
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"cannot write '{path}' ({err.strerror or err}); the previous file, if any, is unchanged. Free some space "
            "or pass a writable path"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), replaced atomically."""
    return replace_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
