"""Go's time.Duration syntax, as Consul's API and config use it ("10s", "1m30s", "72h")."""

from __future__ import annotations

import re

from gateway.errors import InvalidInput

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds; a bare number means seconds."""
    if re.fullmatch(r"\d+", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidInput(f"Invalid wait time: {text!r}")
    return total
