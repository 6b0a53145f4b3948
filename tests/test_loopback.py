"""free_port: ports that outgoing connections cannot take before a server binds them."""

from __future__ import annotations

import socket

from gateway import loopback
from gateway.loopback import ephemeral_range, free_port


def test_ports_are_outside_the_ephemeral_range_distinct_and_bindable() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert not low <= port <= high
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_or_already_given_is_skipped(monkeypatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        given, spare = free_port(), free_port()
        loopback._given.discard(spare)
        draws = iter([taken, given, spare])  # in use, already given, free
        monkeypatch.setattr(loopback._rng, "choice", lambda _choices: next(draws))
        assert free_port() == spare


def test_the_range_file_is_read(tmp_path, monkeypatch) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t50000\n")
    monkeypatch.setattr(loopback, "_RANGE_FILE", str(f))
    assert ephemeral_range() == (40000, 50000)
    monkeypatch.setattr(loopback, "_RANGE_FILE", str(tmp_path / "missing"))
    assert ephemeral_range() == (32768, 60999)


def test_is_listening_sees_a_listener_come_and_go() -> None:
    from gateway.loopback import is_listening

    port = free_port()
    assert not is_listening(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert is_listening(port)
    assert not is_listening(port)
