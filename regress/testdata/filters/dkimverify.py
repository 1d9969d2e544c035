#!/usr/bin/python3
"""Verifies every DKIM signature of the message on standard input with
python3-dkim. The arguments are the key records standing in for DNS,
as name=record (the name with its final dot) or, alone, one record for
any name. Exits 0 if all signatures verify."""
import sys

import dkim

records = {}
for arg in sys.argv[1:]:
    name, sep, record = arg.partition("=")
    if sep and name.endswith("."):
        records[name.encode()] = record.encode()
    else:
        records[None] = arg.encode()


def dnsfunc(name, timeout=5):
    return records.get(name, records.get(None, b""))


message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
count = len([h for h in d.headers if h[0].lower() == b"dkim-signature"])
ok = count > 0
for i in range(count):
    good = d.verify(idx=i, dnsfunc=dnsfunc)
    print("signature %d: %s" % (i, "verified" if good else "not verified"))
    ok = ok and good
sys.exit(0 if ok else 1)
