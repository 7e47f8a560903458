"""A loopback HTTP media host for the media-input conformance tests: images by path, redirects, an oversize body,
a body that stalls, a decompression-bomb PNG and a corrupt one. It binds 127.0.0.1 only and records every request,
so a test can check that a refused URL never reached it."""

from __future__ import annotations

import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def png_header_bomb(width: int = 10000, height: int = 10000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: ~12 KB on the wire, width x height pixels decoded."""
    row = b"\x00" + bytes((width + 7) // 8)
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


class MediaHost:
    """Serves `files` (path -> bytes) and the special routes; `hits` lists the paths requested, in order."""

    def __init__(self, files: dict[str, bytes] | None = None, *, big_bytes: int = 0) -> None:
        self.files = dict(files or {})
        self.big_bytes = big_bytes
        self.hits: list[str] = []
        self.connections = 0  # TCP connections accepted (a TLS hello to this plain-HTTP host counts, too)
        self.release = threading.Event()  # set at close: lets the stalled body finish
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                host.hits.append(parts.path)
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", parse_qs(parts.query)["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path == "/big":
                    self._body(b"\x00" * host.big_bytes, "image/png")
                elif parts.path == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(b"\x89PNG\r\n\x1a\n")
                    self.wfile.flush()
                    host.release.wait(60)  # never released while the fetch waits: only the fetch's time cap ends it
                elif parts.path in host.files:
                    self._body(host.files[parts.path], "application/octet-stream")
                else:
                    self._body(b"not found", "text/plain", 404)

            def _body(self, data: bytes, ctype: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: object, client_address: object) -> None:
                host.connections += 1
                super().process_request(request, client_address)  # type: ignore[arg-type]

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
