# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a netprobe.ebpf.ebpf_gadget run costs, first (compile) and repeat (cached image), next to a
plain netprobe.ebpf.ebpf_facts run.

Interleaved for N rounds, in a random order each round, the ad-hoc commands users type:

    ansible localhost -m netprobe.ebpf.ebpf_facts -a 'gather_subset=all'
    ansible localhost -m netprobe.ebpf.ebpf_gadget -a 'gadget=trace_drop duration=0.5'   (first: cache removed)
    ansible localhost -m netprobe.ebpf.ebpf_gadget -a '... other params and filters ...'   (repeat: cached)

Medians of the wall time of each command and of the module's own `cost` figures. The gadget image
cache (/var/cache/netprobe/gadgets) is removed before each "first" run. Run as root:
`.venv/bin/python benchmarks/gadget_cost.py [--rounds N] [--json out.json]`.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
CACHE = '/var/cache/netprobe/gadgets'
DURATION = 0.5


def adhoc(module, args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_CALLBACK_RESULT_FORMAT='json')
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-m', 'netprobe.ebpf.' + module, '-a', json.dumps(args)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    out = proc.stdout
    start = out.find('localhost | ')
    result = json.JSONDecoder().raw_decode(out[out.index('{', start):])[0] if start >= 0 else {}
    if proc.returncode != 0 or result.get('failed'):
        raise RuntimeError('%s failed: %s' % (module, out[-2000:] + proc.stderr[-2000:]))
    return wall, result


VARIANTS = {
    'ebpf_facts': lambda: adhoc('ebpf_facts', dict(gather_subset=['all'])),
    'gadget first (compile)': lambda: (shutil.rmtree(CACHE, ignore_errors=True),
                                       adhoc('ebpf_gadget', dict(gadget='trace_drop', duration=DURATION)))[1],
    'gadget repeat (other params)': lambda: adhoc('ebpf_gadget', dict(
        gadget='trace_drop', duration=DURATION, filter=['proto == udp', 'dport == 53'],
        params=dict(buffer_kb=1024))),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--json')
    a = ap.parse_args()
    samples = dict((name, []) for name in VARIANTS)
    VARIANTS['gadget repeat (other params)']()  # make sure a cached image exists for the first repeat
    for _round in range(a.rounds):
        order = list(VARIANTS)
        random.shuffle(order)
        for name in order:
            samples[name].append(VARIANTS[name]())
    rows = []
    for name, runs in samples.items():
        cost = [r.get('cost', {}) for _w, r in runs]

        def med(key, cost=cost):
            return statistics.median(c.get(key, 0) for c in cost) if cost and cost[0] else None

        rows.append(dict(variant=name, wall_s=round(statistics.median(w for w, _r in runs), 2),
                         module_s=med('wall_s'), compile_s=med('compile_s'), load_s=med('load_s'),
                         read_s=med('read_s')))
    print('| run | ansible wall (median) | module wall | compile | load + attach | read |')
    print('| --- | ---: | ---: | ---: | ---: | ---: |')

    def fmt(v):
        return '' if v is None else '%.3f s' % v

    for r in rows:
        print('| %s | %.2f s | %s | %s | %s | %s |' % (r['variant'], r['wall_s'], fmt(r['module_s']),
                                                       fmt(r['compile_s']), fmt(r['load_s']), fmt(r['read_s'])))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(dict(rounds=a.rounds, rows=rows, samples=dict((k, [w for w, _r in v]) for k, v in samples.items())),
                      f, indent=1)


if __name__ == '__main__':
    main()
