# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report on the controller: a table of hosts x chains x probes with their counters, and a chart.

    fleet_report.py OUTDIR [--top N] < facts.json

facts.json: {"<host>": {"chains": [...], "metrics": [...]}} (each host's ansible_facts.netprobe from
netprobe.ebpf.ebpf_facts, gather_subset chains and metrics). Writes into OUTDIR:
  fleet-report.txt   the table, aligned text
  fleet-report.csv   the same rows, one per host, chain and probe
  fleet-report.json  the rows and the per-chain summary, as read
  fleet-report.png   per-host packets into each chain, per-host drops, the top probes (matplotlib, Agg);
                     skipped, with the reason, when matplotlib is not installed
and prints a JSON summary of what it wrote on stdout.

Per probe, packets and bytes are the sums over the probe's exported metric entries that carry `packets`
/ `bytes` fields (the bundled counter's by_proto map). Per chain, `in` is the count of its first counting
probe, `out` that of its last one, and `dropped` = in - out (only with two counting probes or more).
"""

import argparse
import csv
import json
import os
import sys

MAX_INPUT = 64 << 20


def load_facts(stream):
    data = stream.read(MAX_INPUT + 1)
    if len(data) > MAX_INPUT:
        raise SystemExit('fleet_report: the facts are larger than %d bytes: report on fewer hosts at a time '
                         '(-e fleet_hosts=...)' % MAX_INPUT)
    facts = json.loads(data or '{}')
    if not isinstance(facts, dict):
        raise SystemExit('fleet_report: expected a JSON object {host: facts}')
    return facts


def _sum(entries, field):
    total = 0
    for e in entries:
        value = e.get('value')
        if isinstance(value, dict) and isinstance(value.get(field), int):
            total += value[field]
    return total


def rows_of(facts):
    """One row per host, chain and probe (chain order), and one summary per host and chain."""
    rows, chains = [], []
    for host in sorted(facts):
        netprobe = facts[host] or {}
        counted = {}
        for m in netprobe.get('metrics') or []:
            key = (m.get('netns_id'), m.get('interface'), m.get('mode'), m.get('hook'), m.get('probe'))
            entries = m.get('entries') or []
            if not any(isinstance(e.get('value'), dict) and 'packets' in e['value'] for e in entries):
                continue
            prev = counted.get(key, (0, 0, 0))
            counted[key] = (prev[0] + _sum(entries, 'packets'), prev[1] + _sum(entries, 'bytes'),
                            prev[2] + int(m.get('count', len(entries))))
        for c in sorted(netprobe.get('chains') or [], key=lambda c: (c['netns'], c['interface'], c['mode'], c['hook'])):
            name = '%s/%s %s-%s' % (c['netns'], c['interface'], c['mode'], c['hook'])
            counting = []
            for p in c.get('probes') or []:
                got = counted.get((c.get('netns_id'), c['interface'], c['mode'], c['hook'], p['name']))
                rows.append({'host': host, 'chain': name, 'probe': p['name'], 'position': p.get('position'),
                             'prog_id': p.get('prog_id'), 'packets': got[0] if got else None,
                             'bytes': got[1] if got else None, 'entries': got[2] if got else None})
                if got:
                    counting.append(got[0])
            chains.append({'host': host, 'chain': name, 'attached': bool(c.get('attached')),
                           'drift': len(c.get('drift') or []), 'probes': len(c.get('probes') or []),
                           'in': counting[0] if counting else None,
                           'out': counting[-1] if counting else None,
                           'dropped': counting[0] - counting[-1] if len(counting) > 1 else None})
    return rows, chains


def _fmt(value):
    return '-' if value is None else str(value)


def write_table(path, rows, chains):
    lines = []
    spec = [('host', 'HOST'), ('chain', 'CHAIN'), ('attached', 'ATTACHED'), ('drift', 'DRIFT'),
            ('probes', 'PROBES'), ('in', 'IN'), ('out', 'OUT'), ('dropped', 'DROPPED')]
    lines += _aligned('CHAINS', spec, chains)
    spec = [('host', 'HOST'), ('chain', 'CHAIN'), ('position', 'POS'), ('probe', 'PROBE'), ('prog_id', 'PROG'),
            ('packets', 'PACKETS'), ('bytes', 'BYTES'), ('entries', 'ENTRIES')]
    lines += [''] + _aligned('PROBES (packets and bytes summed over each probe\'s exported entries)', spec, rows)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return lines


def _aligned(title, spec, items):
    cells = [[h for _k, h in spec]] + [[_fmt(it[k]) for k, _h in spec] for it in items]
    widths = [max(len(row[i]) for row in cells) for i in range(len(spec))]
    out = [title]
    for row in cells:
        out.append('  '.join(cell.ljust(w) if i < 2 or not cell.replace('-', '').isdigit() else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return out


def write_csv(path, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['host', 'chain', 'position', 'probe', 'prog_id', 'packets',
                                               'bytes', 'entries'])
        writer.writeheader()
        writer.writerows(rows)


def write_chart(path, rows, chains, top):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return 'matplotlib is not installed on the controller (pip install matplotlib): table only'
    hosts = sorted(set(c['host'] for c in chains))
    if not hosts:
        return 'no chains on any host: nothing to draw'
    names = sorted(set(c['chain'] for c in chains))
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.45 * len(hosts) + 3), 11), constrained_layout=True)
    width = 0.8 / max(1, len(names))
    positions = range(len(hosts))
    for axis, field, title in ((axes[0], 'in', 'Packets into each chain (first counting probe)'),
                               (axes[1], 'dropped', 'Packets dropped in each chain (first - last counting probe)')):
        for j, name in enumerate(names):
            by_host = dict((c['host'], c[field] or 0) for c in chains if c['chain'] == name)
            axis.bar([x - 0.4 + width * (j + 0.5) for x in positions], [by_host.get(h, 0) for h in hosts],
                     width, label=name)
        axis.set_title(title)
        axis.set_xticks(list(positions))
        axis.set_xticklabels(hosts, rotation=45 if len(hosts) > 12 else 0, ha='right' if len(hosts) > 12 else 'center')
        axis.set_ylabel('packets')
        axis.grid(axis='y', alpha=0.3)
        axis.legend(fontsize='small')
    ranked = sorted((r for r in rows if r['packets']), key=lambda r: r['packets'], reverse=True)[:top]
    labels = ['%s %s %s' % (r['host'], r['chain'], r['probe']) for r in ranked]
    axes[2].barh(range(len(ranked)), [r['packets'] for r in ranked], color='tab:green')
    axes[2].set_yticks(range(len(ranked)))
    axes[2].set_yticklabels(labels, fontsize='small')
    axes[2].invert_yaxis()
    axes[2].set_title('Top %d probes by packets' % len(ranked))
    axes[2].set_xlabel('packets')
    axes[2].grid(axis='x', alpha=0.3)
    fig.suptitle('netprobe fleet report: %d hosts, %d chains' % (len(hosts), len(chains)))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('outdir')
    parser.add_argument('--top', type=int, default=10)
    args = parser.parse_args()
    rows, chains = rows_of(load_facts(sys.stdin))
    os.makedirs(args.outdir, exist_ok=True)
    out = dict((k, os.path.join(os.path.abspath(args.outdir), 'fleet-report.' + k)) for k in ('txt', 'csv', 'json', 'png'))
    lines = write_table(out['txt'], rows, chains)
    write_csv(out['csv'], rows)
    with open(out['json'], 'w') as f:
        json.dump({'chains': chains, 'probes': rows}, f, indent=1)
    reason = write_chart(out['png'], rows, chains, max(1, args.top))
    if reason and os.path.exists(out['png']):
        os.unlink(out['png'])  # not a stale chart from an earlier run
    json.dump({'table': out['txt'], 'csv': out['csv'], 'json': out['json'], 'chart': None if reason else out['png'],
               'chart_skipped': reason, 'hosts': len(set(c['host'] for c in chains)), 'chains': len(chains),
               'lines': lines}, sys.stdout)


if __name__ == '__main__':
    main()
