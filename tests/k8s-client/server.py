#!/usr/bin/python3
"""A tiny HTTP(S) server with scripted responses for test_kube_client (test-only).

Listens on 127.0.0.1, ephemeral ports; prints "HTTP_PORT TLS_PORT" on stdout (TLS_PORT
is 0 without --tls-dir) and exits when its stdin reaches EOF, so it never outlives the
test. With --tls-dir DIR it makes a CA, a server certificate for 127.0.0.1 and a client
certificate there with the openssl command, and serves the same routes over TLS too,
asking for (not requiring) a client certificate.

Routes:
  ANY  /echo                 JSON of the request: method, path, headers, body, client CN
  GET  /status/CODE          that status with a Kubernetes Status body
  GET  /text404              404 with a plain-text body
  GET  /big?n=N&chunked=0|1  N bytes of 'a'
  GET  /watch/bytes?n=N      N events, every byte its own chunk
  GET  /watch/split?n=N&at=I N events in two chunks split at byte I
  GET  /watch/many?n=N       N events in one chunk
  GET  /watch/malformed      2 events, a line that is not JSON, 1 more event
  GET  /watch/gone           1 event, an ERROR event with a 410 Status, clean end
  GET  /watch/abrupt         1 event, then the connection drops mid-stream
  GET  /watch/500            HTTP 500 with a Status body
  GET  /watch/hang           1 event, then silence until the client goes away
  GET  /watch/long           a line over 16 MiB
  GET  /watch/nonl           1 event, then a last event without its newline
  GET  /watch/echo           1 event whose object holds the Authorization header
"""
import http.server
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse


def event(i, typ="ADDED"):
    obj = {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": "svc-%d" % i, "namespace": "default",
                     "resourceVersion": str(100 + i)},
        "note": "line\nbreak \u00fc",
    }
    return (json.dumps({"type": typ, "object": obj}, ensure_ascii=False) + "\n").encode()


def events(n):
    return b"".join(event(i) for i in range(n))


def status_body(code, message):
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "code": code}).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_chunked(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")

    def wait_for_client_to_leave(self, limit):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            r, _, _ = select.select([self.connection], [], [], 0.1)
            if r:
                try:
                    if not self.connection.recv(1):
                        return
                except OSError:
                    return

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        n = int(q.get("n", "3"))
        p = url.path
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""

        if p == "/echo":
            cn = None
            if isinstance(self.connection, ssl.SSLSocket):
                cert = self.connection.getpeercert()
                if cert:
                    for rdn in cert.get("subject", ()):
                        for k, v in rdn:
                            if k == "commonName":
                                cn = v
            self.reply(200, json.dumps({
                "method": self.command, "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "accept": self.headers.get("Accept"),
                "user_agent": self.headers.get("User-Agent"),
                "content_type": self.headers.get("Content-Type"),
                "body": body.decode(), "client_cn": cn,
                "alpn": self.connection.selected_alpn_protocol()
                if isinstance(self.connection, ssl.SSLSocket) else None}).encode())
        elif p.startswith("/status/"):
            code = int(p[len("/status/"):])
            self.reply(code, status_body(code, "status %d for testing" % code))
        elif p == "/text404":
            self.reply(404, b"404 page not found\n", "text/plain")
        elif p == "/big":
            block = b"a" * (1 << 20)
            if q.get("chunked") == "1":
                self.start_chunked()
                left = n
                while left > 0:
                    self.chunk(block[:min(left, len(block))])
                    left -= min(left, len(block))
                self.end_chunked()
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(n))
                self.end_headers()
                left = n
                while left > 0:
                    self.wfile.write(block[:min(left, len(block))])
                    left -= min(left, len(block))
        elif p == "/watch/bytes":
            self.start_chunked()
            for b in events(n):
                self.chunk(bytes([b]))
                time.sleep(0.0005)
            self.end_chunked()
        elif p == "/watch/split":
            data = events(n)
            at = int(q["at"])
            self.start_chunked()
            self.chunk(data[:at])
            time.sleep(0.02)
            self.chunk(data[at:])
            self.end_chunked()
        elif p == "/watch/many":
            self.start_chunked()
            self.chunk(events(n))
            self.end_chunked()
        elif p == "/watch/malformed":
            self.start_chunked()
            self.chunk(event(0) + event(1) + b"this is not json\n" + event(2))
            self.end_chunked()
        elif p == "/watch/gone":
            self.start_chunked()
            self.chunk(event(0))
            err = {"type": "ERROR", "object": json.loads(status_body(
                410, "too old resource version: 1 (2)"))}
            err["object"]["reason"] = "Expired"
            self.chunk(json.dumps(err).encode() + b"\n")
            self.end_chunked()
        elif p == "/watch/abrupt":
            self.start_chunked()
            self.chunk(event(0) + event(1)[:10])
            time.sleep(0.05)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif p == "/watch/500":
            self.reply(500, status_body(500, "etcd is down"))
        elif p == "/watch/hang":
            self.start_chunked()
            self.chunk(event(0))
            self.wait_for_client_to_leave(60)
            self.close_connection = True
        elif p == "/watch/long":
            self.start_chunked()
            self.chunk(event(0))
            block = b"x" * (1 << 20)
            try:
                for _ in range(17):
                    self.chunk(block)
                self.chunk(b"\n")
                self.end_chunked()
            except OSError:
                self.close_connection = True
        elif p == "/watch/nonl":
            self.start_chunked()
            self.chunk(event(0) + event(1).rstrip(b"\n"))
            self.end_chunked()
        elif p == "/watch/echo":
            self.start_chunked()
            line = {"type": "ADDED",
                    "object": {"authorization": self.headers.get("Authorization"),
                               "user_agent": self.headers.get("User-Agent")}}
            self.chunk(json.dumps(line).encode() + b"\n")
            self.end_chunked()
        else:
            self.reply(404, status_body(404, "no route %s" % p))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # Clients that hang up early (refused bodies, closed watches) are expected.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)


def make_certs(d):
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=d,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", *ec, "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=adapter-" + name)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext + "\n")
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", name + ".crt", "-extfile", name + ".ext")


def main():
    tls_dir = None
    if len(sys.argv) == 3 and sys.argv[1] == "--tls-dir":
        tls_dir = sys.argv[2]
    plain = Server(("127.0.0.1", 0), Handler)
    servers = [plain]
    tls_port = 0
    if tls_dir:
        make_certs(tls_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(tls_dir, "server.crt"),
                            os.path.join(tls_dir, "server.key"))
        ctx.load_verify_locations(os.path.join(tls_dir, "ca.crt"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        # Like kube-apiserver, offer h2 too: the client must ask for HTTP/1.1 only.
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        tls = Server(("127.0.0.1", 0), Handler)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
        tls_port = tls.server_address[1]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(plain.server_address[1], tls_port, flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
