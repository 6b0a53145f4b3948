"""Tables from Consul's documentation that several test modules check against."""

from __future__ import annotations

# Every row of Consul's precedence table: (precedence, (source ns, source name), (dest ns, dest name)).
PRECEDENCE_ROWS = [
    (9, ("ns1", "web"), ("ns2", "db")),
    (8, ("ns1", "*"), ("ns2", "db")),
    (7, ("*", "*"), ("ns2", "db")),
    (6, ("ns1", "web"), ("ns2", "*")),
    (5, ("ns1", "*"), ("ns2", "*")),
    (4, ("*", "*"), ("ns2", "*")),
    (3, ("ns1", "web"), ("*", "*")),
    (2, ("ns1", "*"), ("*", "*")),
    (1, ("*", "*"), ("*", "*")),
]
