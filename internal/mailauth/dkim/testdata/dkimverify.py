#!/usr/bin/python3
"""Verify every DKIM-Signature of a message with Debian's python3-dkim.

usage: dkimverify.py MESSAGE RECORDS

RECORDS has one key record a line, "<name> <TXT record>"; a name not in it
has no record. Prints one line a signature; exits 0 only if the message
has signatures and all of them verify. Run with /usr/bin/python3, the
interpreter Debian's dkim module is installed for.
"""
import logging
import sys

import dkim


def main():
    msg = open(sys.argv[1], 'rb').read()
    records = {}
    with open(sys.argv[2], encoding='ascii') as f:
        for line in f:
            name, _, record = line.rstrip('\n').partition(' ')
            records[name.lower().rstrip('.')] = record.encode('ascii')

    def dnsfunc(name, timeout=5):
        return records.get(name.decode('ascii').lower().rstrip('.'))

    logging.basicConfig(stream=sys.stderr, format='python3-dkim: %(message)s')
    log = logging.getLogger('dkimverify')
    n = sum(1 for k, _ in dkim.DKIM(msg).headers if k.lower() == b'dkim-signature')
    ok = n > 0
    for i in range(n):
        d = dkim.DKIM(msg, logger=log, minkey=1024)
        try:
            res = d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            print('%d error %s' % (i, e))
            res = False
        fields = d.signature_fields
        print('%d %s s=%s d=%s %s' % (i, 'pass' if res else 'fail',
              fields.get(b's', b'?').decode(), fields.get(b'd', b'?').decode(),
              fields.get(b'a', b'?').decode()))
        ok = ok and res
    sys.exit(0 if ok else 1)


main()
