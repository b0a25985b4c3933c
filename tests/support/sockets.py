"""Loopback sockets seen from the kernel: clients that stop reading, and what a server's side
of its connections still holds."""

from __future__ import annotations

import socket
from pathlib import Path

TCP_STATES = {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 8: "CLOSE_WAIT"}


def small_buffer_socket(port: int) -> socket.socket:
    """A client socket with a 16 KiB receive buffer, so a stall shows quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    return sock


def server_sockets(
    port: int, peers: set[int], pid: int | str = "self"
) -> dict[int, tuple[str, int]]:
    """The server's side of its IPv4 connections from the loopback client ports ``peers``:
    peer port -> (TCP state, bytes in its send queue), from the kernel's table of ``pid``'s
    network namespace (so a socket the process has let go of, still in the kernel, shows)."""
    found: dict[int, tuple[str, int]] = {}
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], int(fields[3], 16)
        tx_queue = int(fields[4].split(":")[0], 16)
        local_port, remote_port = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
        if local_port == port and remote_port in peers:
            found[remote_port] = (TCP_STATES.get(state, hex(state)), tx_queue)
    return found
