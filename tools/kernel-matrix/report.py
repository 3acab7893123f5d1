"""Print the kernel-matrix table (kernel x check) and the capability facts that differ between kernels.
Exit status 1 when any check of any kernel failed or is missing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import sys

CHECKS = ['create', 'uname', 'converge', 'idempotence', 'ping', 'xdp_count', 'tc_count', 'verify']


def load(results, short):
    name = 'k' + short.replace('.', '-')
    stages, data = {}, {}
    try:
        with open(os.path.join(results, name + '.stages')) as f:
            for line in f:
                stage, rc, seconds = line.split()
                stages[stage] = (int(rc), int(seconds))
    except OSError:
        pass
    try:
        with open(os.path.join(results, name + '.json')) as f:
            data = json.load(f)
    except (OSError, ValueError):
        pass
    row = {}
    for stage in ('create', 'converge', 'idempotence', 'verify'):
        row[stage] = None if stage not in stages else stages[stage][0] == 0
    for check in ('uname', 'ping', 'xdp_count', 'tc_count'):
        value = data.get('checks', {}).get(check)
        row[check] = None if value is None else str(value).lower() == 'true'
    return name, row, stages, data


def text(facts, key):
    return str(facts[key]).lower() if key in facts else '-'


def merged_facts(data):
    """Direct probes of verify (files/kernel_facts.py) plus the collection's own ebpf_facts capabilities."""
    facts = dict(data.get('facts', {}))
    caps = data.get('collection_capabilities') or {}
    for key, value in caps.items():
        if isinstance(value, (bool, int, str)) and key not in ('kernel_release', 'kernel_version', 'possible_cpus'):
            facts['np.' + key] = value
    if isinstance(caps.get('kernel_headers'), dict):
        facts['np.kernel_headers'] = caps['kernel_headers'].get('kind')
    if data.get('collection_facts_error'):
        facts['np.error'] = data['collection_facts_error'][:60]
    return facts


def cell(value):
    return {True: 'pass', False: 'FAIL', None: '-'}[value]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('results')
    ap.add_argument('kernels', nargs='+')
    ap.add_argument('--box-seconds', type=int, default=0)
    ap.add_argument('--total-seconds', type=int, default=0)
    args = ap.parse_args()

    rows = [(k,) + load(args.results, k) for k in args.kernels]
    header = ['kernel', 'release'] + CHECKS + ['headers', 'sent', 'xdp', 'tc', 'cycle s']
    table = []
    failed = False
    for short, _name, row, stages, data in rows:
        counts = data.get('counts', {})
        xdp = json.loads(counts.get('xdp_rx') or '{}').get('total', '-') if counts else '-'
        tc = json.loads(counts.get('tc_tx') or '{}').get('total', '-') if counts else '-'
        table.append([short, data.get('uname', '?')] + [cell(row[c]) for c in CHECKS]
                     + [data.get('headers', '-'), counts.get('sent', '-'), xdp, tc,
                        stages.get('cycle', (0, '-'))[1]])
        failed = failed or any(row[c] is not True for c in CHECKS)
    widths = [max(len(str(r[i])) for r in [header] + table) for i in range(len(header))]

    def line(r):
        return '  '.join(str(v).ljust(w) for v, w in zip(r, widths))

    print()
    print(line(header))
    print(line(['-' * w for w in widths]))
    for r in table:
        print(line(r))

    facts = [(short, merged_facts(data)) for short, _n, _r, _s, data in rows if data.get('facts')]
    keys = sorted(set(k for _s, f in facts for k in f) - {'release'})
    differ = [k for k in keys if len(set(json.dumps(f[k]) for _s, f in facts if k in f)) > 1]
    same = [k for k in keys if k not in differ]
    if facts:
        print()
        print('capabilities that differ between kernels:' if len(facts) > 1 else 'capabilities:')
        shown = differ if len(facts) > 1 else keys
        fw = max([len(k) for k in shown] + [10])
        cw = [max([len(s)] + [len(text(f, k)) for k in shown]) for s, f in facts]
        print('  ' + 'fact'.ljust(fw) + '  ' + '  '.join(s.ljust(w) for (s, _f), w in zip(facts, cw)))
        for k in shown:
            print('  ' + k.ljust(fw) + '  ' + '  '.join(text(f, k).ljust(w) for (_s, f), w in zip(facts, cw)))
        if len(facts) > 1 and same:
            print('  same on all: ' + ', '.join('%s=%s' % (k, next(text(f, k) for _s, f in facts if k in f)) for k in same))
    stage_times = ', '.join('%s %s' % (short, ' '.join('%s=%ss' % (st, s[1]) for st, s in stages.items() if st != 'cycle'))
                            for short, _n, _r, stages, _d in rows)
    print()
    print('timings: box %ss (cached when unchanged), total %ss; %s' % (args.box_seconds, args.total_seconds, stage_times))
    print('RESULT: %s' % ('FAIL' if failed else 'PASS'))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
