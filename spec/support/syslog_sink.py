#!/usr/bin/python3
"""A syslog socket for specs: binds a Unix datagram socket at PATH (as
/dev/log is) and appends every datagram it receives, as one line, to FILE.

    syslog_sink.py PATH FILE

Prints "listening 0" once bound, then serves until killed.
"""
import os
import socket
import sys


def main():
    path, out = sys.argv[1], sys.argv[2]
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)  # the gateway's children are another user
    print("listening 0", flush=True)
    with open(out, "ab", buffering=0) as f:
        while True:
            data = s.recv(65536)
            f.write(data.rstrip(b"\n") + b"\n")


if __name__ == "__main__":
    main()
