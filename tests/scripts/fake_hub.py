#!/usr/bin/env python3
"""A local stand-in for the Hugging Face hub's /resolve/ endpoint, for testing
scripts/fetch-model.sh offline: serves files from a folder with the hub's checksum
headers (X-Linked-Etag = sha256 for large files, ETag = git blob sha1 for small ones)
and HTTP Range support. Usage: fake_hub.py ROOT PORT_FILE [--corrupt NAME] [--drop-after N]
  --drop-after N: close the connection after N bytes of the first full GET of each large
  file (to exercise resume)."""
import hashlib
import http.server
import os
import sys

ROOT = sys.argv[1]
PORT_FILE = sys.argv[2]
CORRUPT = sys.argv[sys.argv.index("--corrupt") + 1] if "--corrupt" in sys.argv else None
DROP = int(sys.argv[sys.argv.index("--drop-after") + 1]) if "--drop-after" in sys.argv else 0
dropped = set()
LARGE = 4096


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _file(self):
        # /<org>/<repo>/resolve/<rev>/<name>
        parts = self.path.split("/")
        if len(parts) < 6 or parts[3] != "resolve":
            return None, None
        name = "/".join(parts[5:])
        path = os.path.join(ROOT, name)
        if not os.path.isfile(path):
            return name, None
        with open(path, "rb") as f:
            return name, f.read()

    def _headers(self, name, data, status=200, start=0):
        self.send_response(status)
        if len(data) >= LARGE:
            self.send_header("X-Linked-Etag", '"%s"' % hashlib.sha256(data).hexdigest())
        else:
            self.send_header("ETag", '"%s"' % git_blob_sha1(data))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.end_headers()

    def do_HEAD(self):
        name, data = self._file()
        if data is None:
            self.send_error(404)
            return
        self._headers(name, data)

    def do_GET(self):
        name, data = self._file()
        if data is None:
            self.send_error(404)
            return
        served = data
        if CORRUPT == name:
            served = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        if start:
            self._headers(name, served, 206, start)
            self.wfile.write(served[start:])
            return
        self._headers(name, served)
        if DROP and len(data) >= LARGE and name not in dropped:
            dropped.add(name)
            self.wfile.write(served[:DROP])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(served)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
