"""The TCP sockets longyarn's servers listen on."""

from __future__ import annotations

import socket


def tcp_socket(host: str) -> socket.socket:
    """An unbound TCP socket for `host` (IPv4 or IPv6), reusing its address, whose accepted
    connections send without Nagle's delay.

    The protocol is named: asyncio turns Nagle's algorithm off only on sockets whose protocol
    says TCP, and accepted sockets take it from the listening one. With Nagle on, a response's
    body (or a streamed event) waits for the client's delayed ACK of what went before: about
    40 ms on every request of a kept-alive connection.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
