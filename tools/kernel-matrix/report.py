"""Print the kernel-matrix table (kernel x check) and the capability facts that differ between kernels.
Exit status 1 when any check of any kernel failed or is missing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import sys

STAGES = ['create', 'converge', 'idempotence', 'verify', 'reboot', 'remove']


def load(results, short):
    """(stages {stage: (rc, seconds)}, data of verify's JSON) of one column; rc 'skip' = not applicable."""
    name = 'host' if short == 'host' else 'k' + short.replace('.', '-')
    stages, data = {}, {}
    try:
        with open(os.path.join(results, name + '.stages')) as f:
            for line in f:
                stage, rc, seconds = line.split()
                stages[stage] = (rc if rc == 'skip' else int(rc), int(seconds))
    except OSError:
        pass
    try:
        with open(os.path.join(results, name + '.json')) as f:
            data = json.load(f)
    except (OSError, ValueError):
        pass
    return stages, data


def check_value(value):
    """True / False / 'n/a' (not applicable on this kernel) / None (missing: the check did not run)."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ('n/a', 'na', 'skip'):
        return 'n/a'
    return str(value).lower() == 'true'


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
    return {True: 'pass', False: 'FAIL', None: '-', 'n/a': 'n/a'}[value]


def print_table(header, table):
    widths = [max(len(str(r[i])) for r in [header] + table) for i in range(len(header))]

    def line(r):
        return '  '.join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()

    print(line(header))
    print(line(['-' * w for w in widths]))
    for r in table:
        print(line(r))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('results')
    ap.add_argument('kernels', nargs='+')
    ap.add_argument('--box-seconds', type=int, default=0)
    ap.add_argument('--total-seconds', type=int, default=0)
    args = ap.parse_args()

    cols = [(k,) + load(args.results, k) for k in args.kernels]
    # rows = the molecule stages, then every check key any column recorded (a check file adds keys)
    keys = sorted(set(k for _s, _st, data in cols for k in data.get('checks', {})))
    failed = False
    table = []
    for stage in STAGES:
        row = [stage]
        for _short, stages, _data in cols:
            value = None if stage not in stages else ('n/a' if stages[stage][0] == 'skip' else stages[stage][0] == 0)
            failed = failed or value not in (True, 'n/a')
            row.append(cell(value))
        table.append(row)
    for key in keys:
        row = [key]
        for _short, _stages, data in cols:
            value = check_value(data.get('checks', {}).get(key))
            failed = failed or value not in (True, 'n/a')
            row.append(cell(value))
        table.append(row)
    print()
    print_table(['check'] + [short for short, _s, _d in cols], table)

    # details: release, headers, what check files reported as text (km_info), traffic counts, cycle time
    info_keys = sorted(set(k for _s, _st, data in cols for k in data.get('info', {})))
    details = [['release'] + [data.get('uname', '?') for _s, _st, data in cols],
               ['headers'] + [data.get('headers', '-') for _s, _st, data in cols]]
    for key in info_keys:
        details.append([key] + [str(data.get('info', {}).get(key, '-')) for _s, _st, data in cols])
    for key in ('sent', 'xdp_rx', 'tc_tx'):
        row = [key]
        for _s, _st, data in cols:
            value = data.get('counts', {}).get(key, '-')
            if isinstance(value, str) and value.strip().startswith('{'):
                value = value.strip()
                value = json.loads(value or '{}').get('total', '-')
            row.append(value)
        details.append(row)
    details.append(['cycle s'] + [stages.get('cycle', (0, '-'))[1] for _s, stages, _d in cols])
    print()
    print_table(['detail'] + [short for short, _s, _d in cols], details)

    rows = [(short, None, None, stages, data) for short, stages, data in cols]
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
