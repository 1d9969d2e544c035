#!/usr/bin/python3
"""Verifies the DKIM signatures of the message on standard input with
python3-dkim, the public key record given as the first argument standing
in for DNS. Exits 0 if the first signature verifies."""
import sys

import dkim

record = sys.argv[1].encode()
message = sys.stdin.buffer.read()


def dnsfunc(name, timeout=5):
    return record


ok = dkim.verify(message, dnsfunc=dnsfunc)
print("verified" if ok else "not verified")
sys.exit(0 if ok else 1)
