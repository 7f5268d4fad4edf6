"""The servers' sockets: each response and streamed event leaves at once.

With Nagle's algorithm on, a response's body waits for the client's delayed ACK of its headers
(about 40 ms per request on a kept-alive connection; measured on the web reader: a story page
took 56 ms instead of 8). asyncio switches it off only on sockets that say they are TCP.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from longyarn.app.serve import bind_socket
from longyarn.app.web.serving import listening_socket


def _listening_from_serve(host: str) -> socket.socket:
    sock = bind_socket(host, 0)
    sock.listen()
    return sock


@pytest.mark.parametrize("make", [lambda: listening_socket("127.0.0.1", 0), lambda: _listening_from_serve("127.0.0.1")],
                         ids=["read --serve", "serve"])
async def test_connections_the_servers_accept_send_without_nagles_delay(make):
    listening = make()
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = writer.get_extra_info("socket")
        accepted.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=listening)
    async with server:
        port = listening.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
