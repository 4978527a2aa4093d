#!/usr/bin/python3
"""A next hop that is down, for specs: it accepts each TCP connection and
closes it at once, before any banner (to the gateway: no banner, a
connection failure), and counts them.

    refuser.py --log FILE [--host 127.0.0.1] [--port N]

It binds --port (default 0: a free port) on the loopback with SO_REUSEADDR,
prints "listening PORT" on stdout and serves until killed. Each accepted
connection appends one line "N EPOCH_SECONDS" to FILE (flushed at once),
N counting from 1: the spec reads how many connection attempts reached it,
and when.
"""
import argparse
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    o = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((o.host, o.port))
    s.listen(128)
    print("listening %d" % s.getsockname()[1], flush=True)
    n = 0
    with open(o.log, "a") as log:
        while True:
            c, _ = s.accept()
            n += 1
            log.write("%d %.3f\n" % (n, time.time()))
            log.flush()
            c.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
