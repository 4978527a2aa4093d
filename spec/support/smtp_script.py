#!/usr/bin/python3
"""A scripted SMTP server for the outbound client's specs: it plays the
peer that misbehaves, one step at a time.

    smtp_script.py [--log FILE] [--host 127.0.0.1] [--port N] STEP...

It binds a free loopback port (or --port), prints "listening PORT" and serves
connections one after the other, each with the same steps:

    send:TEXT   send TEXT (backslash escapes such as \\r\\n are decoded)
    line        read one line from the client (up to LF)
    sleep:S     wait S seconds (a slow peer)
    close       close the connection now

After the last step it reads until the client closes (10 s at most). With
--log, every octet received is appended to FILE.
"""
import argparse
import codecs
import socket
import time
import sys


def serve(conn, opts):
    buf = b""
    conn.settimeout(10)

    def log(data):
        if opts.log:
            with open(opts.log, "ab") as f:
                f.write(data)

    def read_line():
        nonlocal buf
        while b"\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            log(chunk)
            buf += chunk
        buf = buf.split(b"\n", 1)[1]
        return True

    for step in opts.steps:
        if step.startswith("send:"):
            text = codecs.decode(step[5:], "unicode_escape")
            conn.sendall(text.encode("latin-1"))
        elif step == "line":
            if not read_line():
                return
        elif step == "close":
            return
        elif step.startswith("sleep:"):
            time.sleep(float(step[6:]))
        else:
            raise SystemExit("unknown step: " + step)
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        log(chunk)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--log")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("steps", nargs="+")
    opts = p.parse_args()
    family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((opts.host, opts.port))
    srv.listen(16)
    print("listening %d" % srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        try:
            serve(conn, opts)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    sys.exit(main())
