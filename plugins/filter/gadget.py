# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: gadget_rows
short_description: Rows of ebpf_gadget results from many hosts, host first
version_added: 0.2.0
description:
  - Takes a dict of host name to the registered result of netprobe.ebpf.ebpf_gadget and returns one list
    of rows, each with C(host) first, then the gadget's columns (events, rows, the last interval's rows of a
    top gadget, or one row per histogram bucket of a profile gadget).
  - C(gadget_table) formats the same rows as an aligned text table with upper-case headers
    (Inspektor Gadget's column style).
options:
  _input:
    description: Dict of host to ebpf_gadget result.
    type: dict
    required: true
author:
  - netprobe.ebpf contributors (@netprobe)
'''

EXAMPLES = r'''
- name: One table across hosts
  ansible.builtin.debug:
    msg: "{{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, 'run')))
             | netprobe.ebpf.gadget_table | split('\n') }}"
'''

RETURN = r'''
_value:
  description: The rows (gadget_rows) or the table text (gadget_table).
  type: raw
'''

import json

MAX_WIDTH = 40


def _records(result):
    if not isinstance(result, dict) or result.get('failed') or result.get('skipped'):
        return []
    if result.get('events') is not None:
        return result['events']
    if result.get('kind') == 'top':
        intervals = result.get('intervals') or []
        return intervals[-1]['rows'] if intervals else result.get('rows') or []
    if result.get('histogram') is not None:
        rows = []
        for h in result['histogram']:
            for b in h.get('buckets', []):
                rows.append(dict(addr=h.get('addr'), low_us=b['low_us'], high_us=b['high_us'], count=b['count']))
        return rows
    return result.get('rows') or []


def gadget_rows(results):
    rows = []
    for host in sorted(results or {}):
        for rec in _records(results[host]):
            row = {'host': host}
            row.update(rec)
            rows.append(row)
    return rows


def _cell(value):
    if value is None:
        text = ''
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True)
    else:
        text = str(value)
    return text if len(text) <= MAX_WIDTH else text[:MAX_WIDTH - 1] + '~'


def gadget_table(results):
    rows = gadget_rows(results)
    columns = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    if not columns:
        failed = sorted(h for h, r in (results or {}).items() if isinstance(r, dict) and r.get('failed'))
        return 'no events' + (' (failed on: %s)' % ', '.join(failed) if failed else '')
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        return '  '.join(v.ljust(widths[i]) for i, v in enumerate(values)).rstrip()

    out = [line([c.upper() for c in columns])]
    out.extend(line(r) for r in cells)
    lost = dict((h, r.get('lost')) for h, r in sorted((results or {}).items()) if isinstance(r, dict) and r.get('lost'))
    if lost:
        out.append('lost: ' + ', '.join('%s=%s' % kv for kv in lost.items()))
    return '\n'.join(out)


class FilterModule(object):
    def filters(self):
        return {'gadget_rows': gadget_rows, 'gadget_table': gadget_table}
