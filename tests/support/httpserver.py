"""A real HTTP server on 127.0.0.1 serving a mirror folder, with what FDA's server does that
http.server does not: HEAD with ETag/Last-Modified, byte ranges. Faults can be injected
(503s, a connection cut mid-file) to exercise retries and resume. Bounded: it serves until the
test stops it."""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Faults:
    fail_next: int = 0                 # answer this many requests with 503
    cut_after_bytes: int | None = None  # cut the next zip GET body after this many bytes (once)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)


class MirrorServer:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.faults = Faults()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _file(self):
                rel = self.path.split("?", 1)[0].lstrip("/") or "index.html"
                p = (server.root / rel).resolve()
                if server.root.resolve() not in p.parents and p != server.root.resolve():
                    return None
                return p if p.is_file() else None

            def _headers(self, p: Path, status: int, length: int, extra=None):
                st = p.stat()
                self.send_response(status)
                self.send_header("Content-Length", str(length))
                self.send_header("Content-Type", "text/html" if p.suffix == ".html" else "application/zip")
                self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
                tag = hashlib.md5(f"{st.st_size}-{st.st_mtime_ns}".encode()).hexdigest()
                self.send_header("ETag", f'"{tag}"')
                self.send_header("Accept-Ranges", "bytes")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()

            def _handle(self, body: bool):
                server.faults.requests.append((self.command, self.path, self.headers.get("Range")))
                if server.faults.fail_next > 0:
                    server.faults.fail_next -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                p = self._file()
                if p is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = p.read_bytes()
                start, status, extra = 0, 200, {}
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    status = 206
                    extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                chunk = data[start:]
                self._headers(p, status, len(chunk), extra)
                if not body:
                    return
                cut = server.faults.cut_after_bytes
                if cut is not None and p.suffix == ".zip":
                    server.faults.cut_after_bytes = None
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(chunk)

            def do_GET(self):
                self._handle(True)

            def do_HEAD(self):
                self._handle(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
