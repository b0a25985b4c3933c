"""The loopback ports the stack hands to its child processes."""

from __future__ import annotations

import socket

import pytest

from delineate.devstack import stack
from delineate.devstack.stack import FIRST_PORT, ephemeral_low, free_offset_pair, free_ports


def test_ports_are_distinct_free_and_outside_the_ephemeral_range() -> None:
    """Outgoing connections take ports from the ephemeral range, so a port chosen there could
    be gone before the server binds it; these never are, and each can be bound."""
    ports = free_ports(40)
    assert len(set(ports)) == 40
    assert all(FIRST_PORT <= port < ephemeral_low() for port in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_an_offset_pair_keeps_both_ports_free_and_in_range() -> None:
    low, high = free_offset_pair(10000)
    assert high == low + 10000 < ephemeral_low()
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", low))
        b.bind(("127.0.0.1", high))


def test_a_taken_port_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every port in a small range but one is held; the one left is the answer."""
    monkeypatch.setattr(stack, "ephemeral_low", lambda: FIRST_PORT + 1100)
    held: list[socket.socket] = []
    try:
        for port in range(FIRST_PORT, FIRST_PORT + 1100):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
        free = held.pop(len(held) // 2)
        expected = free.getsockname()[1]
        free.close()
        assert free_ports(1) == [expected]
    finally:
        for s in held:
            s.close()
