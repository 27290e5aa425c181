"""The local stack's ports: chosen where no outgoing connection can take them before the
process that is to listen there starts, and never twice."""

from __future__ import annotations

import socket

from relay import stack
from relay.stack import HOST, free_port


def test_ports_are_below_the_ephemeral_range_and_never_repeat(monkeypatch):
    monkeypatch.setattr(stack, "_ephemeral_low", lambda: 20_000)
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(stack.LISTEN_PORTS[0] <= p < 20_000 for p in ports)


def test_a_port_something_listens_on_is_not_chosen(monkeypatch):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        taken = busy.getsockname()[1]
        busy.listen()
        monkeypatch.setattr(stack, "LISTEN_PORTS", (taken, taken))  # the only candidate
        monkeypatch.setattr(stack, "_ephemeral_low", lambda: taken + 1)
        assert free_port() != taken  # the kernel chooses instead
