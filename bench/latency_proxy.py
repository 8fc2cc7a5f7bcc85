#!/usr/bin/env python
"""A TCP proxy that delays every byte by a fixed time in each direction: a network with
a round-trip time of twice ``--delay-ms`` between its clients and the server.

Order is kept per direction and nothing is throttled: only latency is added (what
``tc qdisc ... netem delay`` does, where the kernel has netem). Two threads per
direction of each connection (one reads, one writes when the data is due, with
``time.sleep``'s sub-millisecond precision). The proxy's own cost adds a little;
measure the real round trip through it (a ``SELECT 1``), as bench/network.py does.

Usage: ``python bench/latency_proxy.py --listen 127.0.0.1:6543 --to 127.0.0.1:5432
--delay-ms 2.5``
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import threading
import time


def pump(source: socket.socket, target: socket.socket, delay: float) -> None:
    """Forward ``source`` to ``target``, each chunk ``delay`` seconds after it came."""
    chunks: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()

    def send() -> None:
        try:
            while (item := chunks.get()) is not None:
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                target.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while data := source.recv(65536):
            chunks.put((time.monotonic() + delay, data))
    except OSError:
        pass
    chunks.put(None)
    sender.join()


def handle(client: socket.socket, to: tuple[str, int], delay: float) -> None:
    try:
        server = socket.create_connection(to)
    except OSError:
        client.close()
        return
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=pump, args=(server, client, delay), daemon=True)
    back.start()
    pump(client, server, delay)
    back.join()
    client.close()
    server.close()


def serve(listen: tuple[str, int], to: tuple[str, int], delay: float) -> None:
    with socket.create_server(listen, reuse_port=False) as listener:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=handle, args=(client, to, delay), daemon=True).start()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--listen", type=address, required=True)
    ap.add_argument("--to", type=address, required=True)
    ap.add_argument("--delay-ms", type=float, required=True, help="one way")
    a = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        serve(a.listen, a.to, a.delay_ms / 1000)


if __name__ == "__main__":
    main()
