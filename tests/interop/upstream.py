"""Interop upstream for tests/interop/run.sh: streams without holding bodies.

GET /bytes/N   -> N bytes of 'x', Content-Length framed, written in 64 KiB pieces
GET /chunked   -> a chunked response
POST|PUT /count -> reads the body (Content-Length or chunked) and answers its length
other GET      -> echoes the request head as the body
"""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            piece = b"x" * 65536
            while n > 0:
                k = min(n, len(piece))
                self.wfile.write(piece[:k])
                n -= k
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(200, str(self.headers).encode() + self.requestline.encode())

    def _count(self):
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    left -= len(self.rfile.read(min(left, 1 << 20)))
                self.rfile.readline()
                total += size
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                got = self.rfile.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
                total += len(got)
        self._send(200, str(total).encode())

    do_POST = _count
    do_PUT = _count


if __name__ == "__main__":
    # A listen backlog for hundreds of connections opened at once (Python's is 5).
    http.server.ThreadingHTTPServer.request_queue_size = 1024
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
