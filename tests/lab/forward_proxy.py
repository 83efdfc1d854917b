"""A small HTTP forward proxy for the lab's hosts: CONNECT tunnels (pip to PyPI over TLS) and plain
absolute-URI requests (apt to the Debian archive).

The lab network has no route out (the engine runs without iptables NAT), like a host behind a corporate proxy:
its hosts reach apt and PyPI only through this proxy, which listens on the network's gateway address and is
stopped with the lab.

    python tests/lab/forward_proxy.py --listen 172.30.14.1 --port 3128
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import threading
from urllib.parse import urlsplit

_IDLE_SECONDS = 300
_MAX_HEADER = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), _IDLE_SECONDS)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    upstream_writer: asyncio.StreamWriter | None = None
    try:
        head = await asyncio.wait_for(client_reader.readuntil(b"\r\n\r\n"), 30)
        if len(head) > _MAX_HEADER:
            return
        request_line, _, rest = head.partition(b"\r\n")
        method, target, version = request_line.decode("latin-1").split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), 30
            )
            upstream_writer = upstream
            client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await client_writer.drain()
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                client_writer.write(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            upstream_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(url.hostname, url.port or 80), 30
            )
            upstream_writer = upstream
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
            # One request per connection upstream: the client's Connection header is replaced by close.
            headers = [
                line
                for line in rest.split(b"\r\n")
                if line
                and not line.lower().startswith((b"proxy-connection:", b"connection:", b"keep-alive:"))
            ]
            upstream.write(
                f"{method} {path} {version}\r\n".encode("latin-1")
                + b"\r\n".join(headers)
                + b"\r\nConnection: close\r\n\r\n"
            )
            await upstream_writer.drain()
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
    except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        with contextlib.suppress(OSError):
            client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    finally:
        for writer in (client_writer, upstream_writer):
            if writer is not None:
                with contextlib.suppress(OSError):
                    writer.close()


class ForwardProxy:
    """The proxy in a thread of this process: start(), then stop() (also as a context manager)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lab-forward-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> ForwardProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(_handle, self.host, self.port, limit=_MAX_HEADER), self._loop
        )
        self._server = future.result(timeout=10)
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, then end the thread."""

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, default=3128)
    args = parser.parse_args()
    proxy = ForwardProxy(args.listen, args.port).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    proxy.stop()


if __name__ == "__main__":
    main()
