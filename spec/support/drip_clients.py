#!/usr/bin/python3
"""Many slow SMTP clients at once, for spec/integration/drip_spec.lua.

  drip_clients.py --port P --out F [--count 1000] [--first 2] [--addrs 50]
                  [--every 2.0] [--limit 40] [--ready F]

Opens --count connections, spread over the source addresses 127.0.0.FIRST
... 127.0.0.(FIRST+ADDRS-1) (each socket bound to its address), on one
epoll loop. Connection i drips in mode i % 3 once it has the 220 banner:

  command  the octets of "NOOP" and more, one every --every seconds
  junk     "x" octets without a line end, one every --every seconds
  data     EHLO, MAIL, RCPT, DATA (each waiting for its reply), then the
           message text, one octet every --every seconds

The first dripped octet goes out at once; that moment (the 354, for data)
is the connection's "start": the gateway's deadline runs from it. The
client never closes a connection itself; it records when the gateway did
and the last reply line. A connection answered 421 instead of a banner is
"refused". Once every connection has its banner or refusal, the file
--ready is created. After --limit seconds (or once every connection is
closed) the results go to --out as JSON:

  {"conns": [{"ip", "mode", "refused", "start", "closed", "last"}, ...],
   "started": t, "ready": t, "stopped": t}

(times are time.time(); "closed" is null for a connection still open at
the limit). Exit status 0.
"""
import argparse
import errno
import json
import os
import resource
import selectors
import socket
import time

MODES = ("command", "junk", "data")
COMMAND = b"NOOP and a line that never ends " * 4
SETUP = [b"EHLO drip.example\r\n", b"MAIL FROM:<drip@example.org>\r\n",
         b"RCPT TO:<user@example.test>\r\n", b"DATA\r\n"]
SETUP_REPLY = ["250", "250", "250", "354"]
MESSAGE = b"Subject: drip\r\n\r\n" + b"slow " * 100


class Conn:
    def __init__(self, index, ip, mode):
        self.index, self.ip, self.mode = index, ip, mode
        self.sock = None
        self.buf = b""
        self.state = "banner"  # banner, setup, drip, closed
        self.step = 0  # setup command or dripped octet
        self.refused = None
        self.start = None
        self.next_send = None
        self.closed = None
        self.last = None

    def record(self):
        return {"ip": self.ip, "mode": self.mode, "refused": self.refused,
                "start": self.start, "closed": self.closed,
                "last": self.last}


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))


def open_conn(c, port, sel):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((c.ip, 0))
    s.setblocking(False)
    err = s.connect_ex(("127.0.0.1", port))
    if err not in (0, errno.EINPROGRESS):
        raise OSError(err, "connect from %s" % c.ip)
    c.sock = s
    sel.register(s, selectors.EVENT_READ, c)


def close_conn(c, sel, now):
    if c.state == "closed":
        return
    c.state = "closed"
    c.closed = now
    sel.unregister(c.sock)
    c.sock.close()


def send(c, data, sel, now):
    try:
        c.sock.send(data)
    except (BrokenPipeError, ConnectionResetError):
        close_conn(c, sel, now)


def begin_drip(c, now):
    c.state = "drip"
    c.start = now
    c.next_send = now


def on_line(c, line, sel, now):
    c.last = line
    code, more = line[:3], line[3:4] == "-"
    if more:
        return
    if c.state == "banner":
        if code != "220":
            c.refused = line
            return
        if c.mode == "data":
            c.state = "setup"
            send(c, SETUP[0], sel, now)
        else:
            begin_drip(c, now)
    elif c.state == "setup":
        if code != SETUP_REPLY[c.step]:
            return  # a refusal: the gateway closes, or we wait it out
        c.step += 1
        if c.step == len(SETUP):
            c.step = 0
            begin_drip(c, now)
        else:
            send(c, SETUP[c.step], sel, now)


def on_readable(c, sel, now):
    try:
        data = c.sock.recv(4096)
    except (ConnectionResetError, OSError):
        data = b""
    if not data:
        close_conn(c, sel, now)
        return
    c.buf += data
    while b"\n" in c.buf:
        line, c.buf = c.buf.split(b"\n", 1)
        on_line(c, line.rstrip(b"\r").decode("latin-1"), sel, now)


def drip_due(conns, sel, every, now):
    for c in conns:
        if c.state != "drip" or c.next_send > now:
            continue
        text = MESSAGE if c.mode == "data" else COMMAND
        octet = b"x" if c.mode == "junk" else text[c.step % len(text):][:1]
        c.step += 1
        c.next_send += every
        send(c, octet, sel, now)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ready")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--first", type=int, default=2)
    ap.add_argument("--addrs", type=int, default=50)
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--limit", type=float, default=40.0)
    a = ap.parse_args()
    raise_nofile(a.count + 64)
    sel = selectors.DefaultSelector()
    conns = [Conn(i, "127.0.0.%d" % (a.first + i % a.addrs), MODES[i % 3])
             for i in range(a.count)]
    started = time.time()
    ready = None
    pending = list(conns)
    while time.time() - started < a.limit:
        now = time.time()
        # connect in batches, so the listen backlog is never overrun
        for c in pending[:50]:
            open_conn(c, a.port, sel)
        pending = pending[50:]
        for key, _ in sel.select(timeout=0.05):
            on_readable(key.data, sel, time.time())
        now = time.time()
        drip_due(conns, sel, a.every, now)
        if ready is None and not pending and \
                all(c.state != "banner" or c.refused for c in conns):
            ready = now
            if a.ready:
                open(a.ready, "w").close()
        if not pending and all(c.state == "closed" for c in conns):
            break
    stopped = time.time()
    for c in conns:
        if c.state != "closed":
            sel.unregister(c.sock)
            c.sock.close()
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"conns": [c.record() for c in conns], "started": started,
                   "ready": ready, "stopped": stopped}, f)
    os.rename(tmp, a.out)


if __name__ == "__main__":
    main()
