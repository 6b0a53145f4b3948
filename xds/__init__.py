"""terminus's xDS control plane.

`xds-protos` installs a top-level package also named ``xds`` (the CNCF xds protos, e.g.
``xds.core.v3``). Ours shadows it, so we extend ``__path__`` with theirs: both import
from one namespace, for editable and normal installs, from any working directory.
"""

from importlib import metadata as _metadata

try:
    _protos = str(_metadata.distribution("xds-protos").locate_file("xds"))
except _metadata.PackageNotFoundError:  # pragma: no cover - xds-protos is a hard dependency
    _protos = None
if _protos and _protos not in __path__:
    __path__.append(_protos)
