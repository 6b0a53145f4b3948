"""What an L7 decision looks at: method, path and headers, as Envoy's RBAC filter sees them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    method: str
    path: str  # the :path as received; the query string is ignored by path matchers
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names

    @property
    def url_path(self) -> str:
        """The path without query or fragment: what Envoy's url_path matcher compares."""
        cut = len(self.path)
        for sep in ("?", "#"):
            i = self.path.find(sep)
            if i != -1 and i < cut:
                cut = i
        return self.path[:cut]

    @classmethod
    def from_pairs(cls, method: str, path: str, pairs: Iterable[tuple[str, str]]) -> HTTPRequest:
        """Repeated headers are joined with "," before matching, exactly as Envoy does."""
        joined: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            joined[key] = f"{joined[key]},{value}" if key in joined else value
        return cls(method=method, path=path, headers=joined)
