#!/usr/bin/python3
"""Send mail with Python's smtplib for the integration specs.

Prints one JSON object on stdout:
  {"steps": [{"cmd": "ehlo", "code": 250, "text": "..."}, ...],
   "error": null | "ExceptionName: message"}
Each message of --count is sent as MAIL, RCPT..., DATA in one session.
With --starttls the session issues STARTTLS after the first EHLO (smtplib's
default context: no certificate checks) and EHLO again; "tls_version" is
then set. Exit status 0 when the session ran to QUIT (whatever the replies
were).
"""
import argparse
import json
import smtplib
import socket
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--from", dest="sender", default="sender@example.org")
    ap.add_argument("--to", action="append", default=[])
    ap.add_argument("--ehlo", default="client.example")
    ap.add_argument("--msg-file")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--smtputf8", action="store_true")
    ap.add_argument("--mail-option", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--starttls", action="store_true",
                    help="STARTTLS (no certificate checks) and EHLO again")
    args = ap.parse_args()

    if args.msg_file:
        with open(args.msg_file, "rb") as f:
            msg = f.read()
    else:
        msg = b"Subject: smtplib test\r\n\r\nHello from smtplib.\r\n"

    steps = []
    out = {"steps": steps, "error": None}

    def step(name, reply):
        code, text = reply
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        steps.append({"cmd": name, "code": code, "text": text})
        return code

    try:
        s = smtplib.SMTP(local_hostname=args.ehlo, timeout=args.timeout)
        step("connect", s.connect(args.host, args.port))
        step("ehlo", s.ehlo(args.ehlo))
        if args.starttls:
            # connect() does not record the host; starttls() passes it as
            # server_hostname (an address: no SNI is sent)
            s._host = args.host
            step("starttls", s.starttls())
            out["tls_version"] = s.sock.version()
            step("ehlo", s.ehlo(args.ehlo))
        out["esmtp_features"] = {k: v for k, v in s.esmtp_features.items()}
        opts = list(args.mail_option)
        if args.smtputf8:
            opts.append("SMTPUTF8")
        for _ in range(args.count):
            if step("mail", s.mail(args.sender, opts)) != 250:
                step("rset", s.rset())
                continue
            ok = 0
            for rcpt in args.to:
                if step("rcpt", s.rcpt(rcpt)) == 250:
                    ok += 1
            if ok == 0:
                step("rset", s.rset())
                continue
            step("data", s.data(msg))
        step("quit", s.quit())
    except (smtplib.SMTPException, OSError, socket.timeout) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0 if out["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
