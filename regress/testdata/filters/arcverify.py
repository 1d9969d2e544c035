#!/usr/bin/python3
"""Validates the ARC chain of the message on standard input with
python3-dkim; the first argument is the key record standing in for
DNS. Prints the chain's cv and exits 0 if it is pass."""
import sys

import dkim

record = sys.argv[1].encode()


def dnsfunc(name, timeout=5):
    return record


cv, results, comment = dkim.arc_verify(sys.stdin.buffer.read(), dnsfunc=dnsfunc)
print("cv=%s (%s)" % (cv.decode() if isinstance(cv, bytes) else cv, comment))
sys.exit(0 if cv == dkim.CV_Pass else 1)
