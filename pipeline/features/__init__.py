"""Tick-level features: 1000+ candidate indicators with one compiled definition each.

numba caches a compiled function keyed on its own source file only, but ``step`` inlines the
kernels of other files. So before anything here is compiled or loaded from the cache, the cache
of ``step`` is dropped when any feature source changed since it was written; otherwise an edited
kernel would keep running its old compiled code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CACHE = _PACKAGE / "__pycache__"


def _drop_stale_step_cache() -> None:
    # What ``step`` compiles in: the kernels, the core, the book summary layout, the family ids and step.
    names = ("core.py", "l2book.py", "families.py", "step.py")
    sources = sorted([*_PACKAGE.glob("kernels/*.py"), *(_PACKAGE / n for n in names)])
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    stamp = _CACHE / "kernels.sha256"
    try:
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for cached in _CACHE.glob("step.*.nb[ic]"):
            cached.unlink(missing_ok=True)
        _CACHE.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass  # a read-only install: numba will not write a cache there either


_drop_stale_step_cache()
