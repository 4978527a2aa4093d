#!/usr/bin/python3
"""A small real SMTP receiver for specs: plaintext or STARTTLS (Python's ssl
module, i.e. OpenSSL), storing each accepted message as a file.

    smtp_receiver.py --maildir DIR [--cert CRT --key KEY] [--no-starttls]
                     [--rcpt-reply "450 4.2.0 busy"] [--host 127.0.0.1]
                     [--port N] [--data-delay SECONDS] [--command-log FILE]

It binds --port (default 0: a free port) on the loopback, prints
"listening PORT" on stdout and then
serves until killed. Each message lands in DIR/N.eml with the envelope in
DIR/N.env ("tls: TLSv1.3" or "tls: none", "from: ...", "rcpt: ..." lines).
--data-delay waits that long after storing a message before the final 250
(a slow receiver: a sender killed meanwhile never sees the 250).
For the outbound client's specs: --reject-rcpt ADDR (repeatable) answers
RCPT for that address "550 5.1.1 <ADDR>: Recipient address rejected: User
unknown"; --no-pipelining leaves PIPELINING out of the EHLO reply; --size N
announces SIZE N (default 50000000); --transcript FILE appends one line per
command received, "CHUNK COMMAND", CHUNK counting the recv() calls of the
session, so commands that came in one write share it.
--command-log FILE appends every command line received (never the message
text) as "CONN plain|tls LINE", CONN numbering the receiver's connections
from 1: what a sender said in the clear, and on which connection.
For connection reuse: --rset-reply TEXT answers RSET with TEXT (and hangs
up after it when TEXT is a 421); --idle-close SECONDS hangs up on a
connection that says nothing for that long after a message's 250, with
Postfix's "421 4.4.2 ... Error: timeout exceeded", and logs
"CONN plain|tls CLOSED-IDLE" in the command log.
"""
import argparse
import os
import socket
import socketserver
import ssl
import sys
import threading
import time

counter_lock = threading.Lock()
counter = [0]
conn_counter = [0]


def next_name(maildir):
    # skips names a previous receiver on the same maildir has used
    with counter_lock:
        while True:
            counter[0] += 1
            base = os.path.join(maildir, "%d" % counter[0])
            if not os.path.exists(base + ".env"):
                return base


class Session:
    def __init__(self, sock, opts):
        self.sock = sock
        self.opts = opts
        self.buf = b""
        self.tls = None
        self.chunk = 0
        with counter_lock:
            conn_counter[0] += 1
            self.conn = conn_counter[0]
        self.reset()

    def reset(self):
        self.sender = None
        self.rcpts = []

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def line(self):
        while b"\r\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                self.send("421 4.4.2 receiver.test Error: timeout exceeded")
                self.log_command("CLOSED-IDLE")
                return None
            self.sock.settimeout(None)
            if not chunk:
                return None
            self.chunk += 1
            self.buf += chunk
            if len(self.buf) > 1 << 20:
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def ehlo(self, arg):
        lines = ["250-receiver.test", "250-8BITMIME"]
        if not self.opts.no_pipelining:
            lines.insert(1, "250-PIPELINING")
        if self.opts.cert and not self.opts.no_starttls and self.tls is None:
            lines.append("250-STARTTLS")
        lines.append("250 SIZE %d" % self.opts.size)
        self.sock.sendall("".join(l + "\r\n" for l in lines).encode())

    def starttls(self):
        if not self.opts.cert or self.opts.no_starttls or self.tls:
            self.send("502 5.5.1 not offered")
            return True
        self.send("220 2.0.0 go ahead")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.opts.cert, self.opts.key)
        if self.opts.break_tls:
            # A handshake that fails: garbage instead of a ServerHello.
            self.sock.recv(4096)
            self.sock.sendall(b"this is not TLS\r\n")
            return False
        try:
            self.sock = ctx.wrap_socket(self.sock, server_side=True)
        except (ssl.SSLError, OSError):
            return False
        self.tls = self.sock.version()
        self.buf = b""
        self.reset()
        return True

    def data(self):
        if not self.rcpts:
            self.send("554 5.5.1 no valid recipients")
            return True
        self.send("354 go ahead")
        body = []
        while True:
            line = self.line()
            if line is None:
                return False
            if line == b".":
                break
            body.append(line[1:] if line.startswith(b".") else line)
        base = next_name(self.opts.maildir)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(b"\r\n".join(body) + b"\r\n")
        with open(base + ".env", "w") as f:
            f.write("tls: %s\n" % (self.tls or "none"))
            f.write("from: %s\n" % self.sender)
            for r in self.rcpts:
                f.write("rcpt: %s\n" % r)
        os.rename(base + ".eml.tmp", base + ".eml")
        if self.opts.data_delay > 0:
            time.sleep(self.opts.data_delay)
        self.send("250 2.0.0 stored as %s" % os.path.basename(base))
        self.reset()
        if self.opts.idle_close > 0:
            self.sock.settimeout(self.opts.idle_close)
        return True

    def log_command(self, text):
        if self.opts.command_log:
            with counter_lock:
                with open(self.opts.command_log, "a") as f:
                    f.write("%d %s %s\n" % (
                        self.conn, "tls" if self.tls else "plain", text))

    def run(self):
        self.send("220 receiver.test ESMTP spec receiver")
        while True:
            line = self.line()
            if line is None:
                return
            text = line.decode("utf-8", "replace")
            if self.opts.transcript:
                with open(self.opts.transcript, "a") as f:
                    f.write("%d %s\n" % (self.chunk, text))
            self.log_command(text)
            verb = text.split(" ", 1)[0].upper()
            arg = text[len(verb):].strip()
            if verb in ("EHLO", "HELO"):
                self.ehlo(arg)
            elif verb == "STARTTLS":
                if not self.starttls():
                    return
            elif verb == "MAIL":
                self.sender = arg[5:].strip() if len(arg) > 5 else ""
                self.send("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = arg[3:].strip()
                if addr.strip("<>") in (self.opts.reject_rcpt or []):
                    self.send("550 5.1.1 %s: Recipient address rejected: "
                              "User unknown" % addr)
                elif self.opts.rcpt_reply:
                    self.send(self.opts.rcpt_reply)
                else:
                    self.rcpts.append(arg[3:].strip())
                    self.send("250 2.1.5 ok")
            elif verb == "DATA":
                if not self.data():
                    return
            elif verb == "RSET" and self.opts.rset_reply:
                self.send(self.opts.rset_reply)
                if self.opts.rset_reply.startswith("421"):
                    return
            elif verb == "RSET":
                self.reset()
                self.send("250 2.0.0 ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 bye")
                return
            else:
                self.send("502 5.5.2 unknown")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--maildir", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--no-starttls", action="store_true")
    p.add_argument("--break-tls", action="store_true")
    p.add_argument("--rcpt-reply")
    p.add_argument("--reject-rcpt", action="append")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--size", type=int, default=50000000)
    p.add_argument("--transcript")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--data-delay", type=float, default=0.0)
    p.add_argument("--command-log")
    p.add_argument("--rset-reply")
    p.add_argument("--idle-close", type=float, default=0.0)
    opts = p.parse_args()
    os.makedirs(opts.maildir, exist_ok=True)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                Session(self.request, opts).run()
            except (OSError, ssl.SSLError):
                pass

    family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET

    class Server(socketserver.ThreadingTCPServer):
        address_family = family
        daemon_threads = True
        allow_reuse_address = True
        # socketserver's default backlog of 5 drops the handshakes of a
        # gateway that opens many connections at once (they then wait for
        # a banner that never comes)
        request_queue_size = 128

    with Server((opts.host, opts.port), Handler) as srv:
        print("listening %d" % srv.server_address[1], flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
