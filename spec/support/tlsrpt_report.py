#!/usr/bin/python3
"""Decodes a TLS report mail (RFC 8460 §5.3) for the specs, with Python's
email, gzip and json: reads one stored message (.eml) and prints one JSON
object: {"content_type", "report_type", "subject", "from", "to",
"tls_report_domain", "tls_report_submitter", "tls_required",
"parts": [content types],
"filename", "report": the JSON report} or {"error": "..."}.

    tlsrpt_report.py FILE.eml
"""
import email
import email.policy
import gzip
import json
import sys


def decode(path):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    out = {
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "subject": " ".join(str(msg.get("Subject", "")).split()),
        "from": str(msg.get("From", "")),
        "to": str(msg.get("To", "")),
        "tls_report_domain": str(msg.get("TLS-Report-Domain", "")),
        "tls_report_submitter": str(msg.get("TLS-Report-Submitter", "")),
        "tls_required": str(msg.get("TLS-Required", "")),
        "parts": [],
    }
    for part in msg.iter_parts():
        out["parts"].append(part.get_content_type())
        if part.get_content_type() == "application/tlsrpt+gzip":
            out["filename"] = part.get_filename()
            raw = part.get_payload(decode=True)
            out["report"] = json.loads(gzip.decompress(raw).decode("utf-8"))
    return out


def main():
    try:
        print(json.dumps(decode(sys.argv[1])))
    except Exception as e:  # the spec prints what went wrong
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
