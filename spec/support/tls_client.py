#!/usr/bin/python3
"""A scripted SMTP client with STARTTLS for the integration specs.

Run with /usr/bin/python3 (the ssl module of the system OpenSSL):

  tls_client.py --port P [--host 127.0.0.1] --script FILE [--timeout S]

FILE holds a JSON list of steps, run in order after the banner was read:

  {"op": "cmd", "line": "EHLO x"}     send line + CRLF, read one reply
  {"op": "send", "data": "..."}       send the bytes (latin-1) in ONE send
  {"op": "read"}                      read one reply
  {"op": "tls", "sni": NAME|null, "cert": PEM, "key": PEM, "ca": PEM}
                                      TLS handshake on the socket (client
                                      certificate and chain check optional;
                                      without "ca" nothing is verified)
  {"op": "closed"}                    wait for the server to close

Prints one JSON object on stdout:

  {"banner": {"code": 220, "text": ..., "lines": [...]},
   "steps": [{"op": ..., "code": n, "text": ..., "lines": [...]}, ...],
   "error": null | "ExceptionName: message"}

A "tls" step records version, cipher, peer_cert (PEM of the certificate
the server presented) and plain_leftover (bytes the server sent in
plaintext that were still unread when the handshake began: there must be
none). A "closed" step records closed (true/false) and data (what arrived
instead). The script stops at the first error. Exit status 0 when every
step ran.
"""
import argparse
import json
import socket
import ssl
import sys
import time


class Closed(Exception):
    pass


class Session:
    def __init__(self, sock, timeout):
        self.sock = sock
        self.buf = b""
        self.timeout = timeout

    def _recv(self):
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
            data = b""
        return data

    def read_line(self):
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete reply line within %ss; got %r"
                                     % (self.timeout, self.buf))
            self.sock.settimeout(left)
            data = self._recv()
            if not data:
                raise Closed("connection closed; unread %r" % self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_reply(self):
        lines = []
        while True:
            raw = self.read_line()
            if not raw.endswith(b"\r\n"):
                raise ValueError("reply line not ended by CRLF: %r" % raw)
            line = raw[:-2].decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        code = int(lines[-1][:3]) if lines[-1][:3].isdigit() else None
        return {"code": code, "text": "\n".join(lines), "lines": lines}

    def send(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def closed(self):
        deadline = time.monotonic() + self.timeout
        got = self.buf
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return {"closed": False, "data": got.decode("latin-1"),
                        "timeout": True}
            self.sock.settimeout(left)
            try:
                data = self._recv()
            except socket.timeout:
                continue
            except ssl.SSLError as e:
                # an alert or an unclean end counts as closed
                return {"closed": True, "data": got.decode("latin-1"),
                        "ssl_error": str(e)}
            if not data:
                return {"closed": not got, "data": got.decode("latin-1")}
            got += data

    def starttls(self, step):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if step.get("ca"):
            ctx.load_verify_locations(cafile=step["ca"])
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.check_hostname = bool(step.get("sni"))
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if step.get("cert"):
            ctx.load_cert_chain(step["cert"], step.get("key"))
        leftover = self.buf
        self.buf = b""
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=step.get("sni"))
        der = self.sock.getpeercert(binary_form=True)
        cipher = self.sock.cipher()
        return {
            "version": self.sock.version(),
            "cipher": cipher and cipher[0],
            "peer_cert": der and ssl.DER_cert_to_PEM_cert(der),
            "plain_leftover": leftover.decode("latin-1"),
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--script", required=True)
    ap.add_argument("--timeout", type=float, default=10)
    args = ap.parse_args()
    with open(args.script, "r", encoding="utf-8") as f:
        script = json.load(f)

    out = {"banner": None, "steps": [], "error": None}
    sock = None
    s = None
    try:
        sock = socket.create_connection((args.host, args.port), args.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = Session(sock, args.timeout)
        out["banner"] = s.read_reply()
        for step in script:
            op = step["op"]
            rec = {"op": op}
            if op == "cmd":
                rec["line"] = step["line"]
                s.send(step["line"].encode("latin-1") + b"\r\n")
                rec.update(s.read_reply())
            elif op == "send":
                s.send(step["data"].encode("latin-1"))
            elif op == "read":
                rec.update(s.read_reply())
            elif op == "tls":
                rec.update(s.starttls(step))
            elif op == "closed":
                rec.update(s.closed())
            else:
                raise ValueError("unknown op %r" % op)
            out["steps"].append(rec)
    except (OSError, ValueError, Closed, ssl.SSLError) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if s is not None:
            sock = s.sock
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0 if out["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
