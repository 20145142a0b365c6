"""A small web server the port tests run INSIDE a sandbox (standard library only).

    python3 sandbox_web_server.py PORT

GET /stream   five chunks, 0.2 s apart (a streaming response); /stream?forever: no end
GET /headers  the request's headers as JSON
GET /never    accepts the request and never answers
POST /hash    sha256 of the request body (Content-Length or chunked)
GET /ws       a WebSocket echo (text and binary)
anything else static files from /workspace
"""

import base64
import hashlib
import http.server
import itertools
import json
import os
import struct
import sys
import time

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory="/workspace", **kwargs)

    def log_message(self, *args):
        pass

    def _send(self, body, content_type="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in itertools.count() if self.path.endswith("forever") else range(5):
                chunk = f"data: tick {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/headers":
            self._send(json.dumps({k.lower(): v for k, v in self.headers.items()}).encode(), "application/json")
        elif self.path == "/never":
            time.sleep(3600)
        elif self.path == "/ws":
            self._websocket_echo()
        else:
            super().do_GET()

    def do_POST(self):
        digest = hashlib.sha256()
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if not size:
                    self.rfile.readline()
                    break
                digest.update(self.rfile.read(size))
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length", "0"))
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                digest.update(chunk)
                remaining -= len(chunk)
        self._send(digest.hexdigest().encode())

    def _websocket_echo(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x02" + payload[:2])
                return
            if opcode in (1, 2):
                size = len(payload)
                if size < 126:
                    header = struct.pack(">BB", 0x80 | opcode, size)
                elif size < 65536:
                    header = struct.pack(">BBH", 0x80 | opcode, 126, size)
                else:
                    header = struct.pack(">BBQ", 0x80 | opcode, 127, size)
                self.wfile.write(header + payload)
                self.wfile.flush()


if __name__ == "__main__":
    os.chdir("/workspace")
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
