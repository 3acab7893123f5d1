"""Sum a pinned counter map (per-CPU hash {l3_proto u16, l4_proto u8, pad} -> {packets u64, bytes u64})
read with bpftool, independently of the collection. Prints JSON {pin, total, by_l4: {proto: packets}}."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import json
import subprocess
import sys

pattern = sys.argv[1]
pins = sorted(glob.glob(pattern), key=lambda p: int(p.split('/g')[-1].split('/')[0]))
if not pins:
    sys.exit('no pinned map matches %s' % pattern)
pin = pins[-1]
entries = json.loads(subprocess.check_output(['bpftool', 'map', 'dump', 'pinned', pin, '-j']))


def raw_bytes(seq):
    return bytes(int(b, 16) for b in seq)


by_l4, total = {}, 0
for entry in entries:
    key = raw_bytes(entry['key'])
    packets = 0
    for cpu in entry['values']:
        packets += int.from_bytes(raw_bytes(cpu['value'])[:8], 'little')
    by_l4[str(key[2])] = by_l4.get(str(key[2]), 0) + packets
    total += packets
print(json.dumps({'pin': pin, 'total': total, 'by_l4': by_l4}))
