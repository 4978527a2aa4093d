#!/usr/bin/python3
"""N SMTP sessions held open across an event (a reload, a restart).

  held_sessions.py --port P --sessions N --go-file F --out F [--host H]

Opens N connections (threads, blocking sockets, 60 s timeouts), and on each
reads the banner and sends EHLO, MAIL FROM, RCPT TO (user@example.test),
checking each reply. Prints "ready N" once every session is at that point
(or "ready K" with K < N if some failed: they are counted as failures).
Then it waits for the go file, and every session finishes: DATA, the
message, QUIT. A session is ok when every reply was the one wanted (220,
250, 250, 250, 354, "250 2.0.0 Ok: queued as ID", 221). The summary goes to
--out as JSON: {"sessions": n, "ok": n, "failed": n, "failures": [...],
"queued_ids": [...]}. Exit status 0.
"""
import argparse
import json
import os
import socket
import threading
import time


class Failure(Exception):
    pass


def read_reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise Failure("connection closed after %r" % lines)
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return lines


def expect(f, code, step):
    lines = read_reply(f)
    if not lines[-1].startswith(str(code)):
        raise Failure("%s: %s" % (step, " | ".join(lines)))
    return lines[-1]


class Session:
    def __init__(self, args, i):
        self.args, self.i = args, i
        self.sock = None
        self.f = None
        self.error = None
        self.qid = None

    def open(self):
        s = socket.create_connection((self.args.host, self.args.port), 60)
        self.sock, self.f = s, s.makefile("rb")
        expect(self.f, 220, "banner")
        self.send(b"EHLO held%d.example.org\r\n" % self.i)
        expect(self.f, 250, "EHLO")
        self.send(b"MAIL FROM:<held%d@example.org>\r\n" % self.i)
        expect(self.f, 250, "MAIL")
        self.send(b"RCPT TO:<user@example.test>\r\n")
        expect(self.f, 250, "RCPT")

    def finish(self):
        self.send(b"DATA\r\n")
        expect(self.f, 354, "DATA")
        self.send(b"Subject: held %d\r\n\r\nheld across the event\r\n.\r\n"
                  % self.i)
        last = expect(self.f, 250, "end of data")
        if "queued as " not in last:
            raise Failure("end of data: " + last)
        self.qid = last.split("queued as ")[-1].strip()
        self.send(b"QUIT\r\n")
        expect(self.f, 221, "QUIT")

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        if self.sock is not None:
            self.sock.close()


def run(session, phase, barrier_go, args):
    try:
        session.open()
    except (OSError, Failure) as e:
        session.error = "open: %s" % e
    phase.release()
    barrier_go.wait()
    if session.error is None:
        try:
            session.finish()
        except (OSError, Failure) as e:
            session.error = "finish: %s" % e
    session.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--go-file", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    threading.stack_size(256 * 1024)
    phase = threading.Semaphore(0)
    go = threading.Event()
    sessions = [Session(args, i) for i in range(args.sessions)]
    threads = [threading.Thread(target=run, args=(s, phase, go, args))
               for s in sessions]
    for t in threads:
        t.start()
    for _ in sessions:
        phase.acquire()
    opened = sum(1 for s in sessions if s.error is None)
    print("ready %d" % opened, flush=True)
    while not os.path.exists(args.go_file):
        time.sleep(0.02)
    go.set()
    for t in threads:
        t.join()
    failures = [s.error for s in sessions if s.error is not None]
    out = {"sessions": len(sessions), "ok": len(sessions) - len(failures),
           "failed": len(failures), "failures": failures[:50],
           "queued_ids": [s.qid for s in sessions if s.qid]}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.rename(tmp, args.out)


if __name__ == "__main__":
    main()
