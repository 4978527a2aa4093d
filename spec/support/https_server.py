#!/usr/bin/python3
"""A small HTTPS server for the MTA-STS specs: Python's http.server behind
Python's ssl module (OpenSSL), answering each GET from a JSON file that is
read again at every request, so a spec changes what it serves by rewriting
the file.

    https_server.py --host 127.0.0.1 --port 443 --cert CRT --key KEY
                    --config FILE --log FILE

The JSON file maps "HOST/PATH" (the Host header without a port, lower case)
to an answer: {"status": 200, "type": "text/plain", "body": "...",
"repeat": N (the body N times), "location": "https://..."}; "type": null
sends no Content-Type. A request with no answer gets 404. Each request
appends "HOST PATH" to the log file. Prints "listening PORT" once bound,
then serves until killed.
"""
import argparse
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log_lock = threading.Lock()


def answer_for(config_path, host, path):
    try:
        with open(config_path) as f:
            conf = json.load(f)
    except (OSError, ValueError):
        conf = {}
    return conf.get(host + path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        opts = self.server.opts
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        with log_lock, open(opts.log, "a") as f:
            f.write("%s %s\n" % (host, self.path))
        entry = answer_for(opts.config, host, self.path)
        if entry is None:
            entry = {"status": 404, "type": "text/plain", "body": "not found\n"}
        body = (entry.get("body") or "").encode() * int(entry.get("repeat", 1))
        self.send_response(int(entry.get("status", 200)))
        ctype = entry.get("type", "text/plain")
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        if "location" in entry:
            self.send_header("Location", entry["location"])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--log", required=True)
    opts = p.parse_args()
    server = ThreadingHTTPServer((opts.host, opts.port), Handler)
    server.daemon_threads = True
    server.opts = opts
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(opts.cert, opts.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
