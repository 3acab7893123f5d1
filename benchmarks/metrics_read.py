# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a full 65,536-entry metric map: batch reads against per-key iteration.

The maps are what a probe would declare, made directly with bpf(2) so no compiler runs:

  hash         struct flow {u32 saddr, daddr; u16 sport, dport; u8 proto; u8 pad[3]} -> struct {u64 packets, bytes}
  percpu_hash  the same, per CPU (values summed over CPUs by the reader)

filled to max_entries and pinned under a temporary directory in bpffs, then read the way
ebpf_facts and ebpf_metrics_info read them: _metrics.PinnedMap opened by path, keys and values
decoded from bcc's JSON type descriptions (addresses rendered as strings), with

  batch     BPF_MAP_LOOKUP_BATCH, a few calls for the whole map
  iterate   BPF_MAP_GET_NEXT_KEY + BPF_MAP_LOOKUP_ELEM per key (the fallback for kernels or map
            types without batch operations, and what a naive reader does)

Each figure is the median wall time of --rounds reads (read + decode, and the kernel part alone).
Run as root: `.venv/bin/python benchmarks/metrics_read.py [--entries N] [--rounds N] [--json F]`.
"""

import argparse
import ctypes
import json
import os
import platform
import shutil
import statistics
import struct
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, '.cache', 'collections'))

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _metrics  # noqa: E402

MAP_CREATE = 0
MAP_UPDATE_BATCH = 26
MAP_TYPES = {'hash': 1, 'percpu_hash': 5}
KEY_DESC = json.dumps(['flow', [['saddr', 'unsigned int'], ['daddr', 'unsigned int'], ['sport', 'unsigned short'],
                                ['dport', 'unsigned short'], ['proto', 'unsigned char'],
                                ['pad', 'unsigned char', [3]]], 'struct_packed'])
VALUE_DESC = json.dumps(['traffic', [['packets', 'unsigned long long'], ['bytes', 'unsigned long long']],
                         'struct_packed'])
KEY = struct.Struct('=4s4sHHB3x')
VALUE = struct.Struct('=QQ')


def make_map(kind, entries):
    attr = struct.pack('=IIIIII', MAP_TYPES[kind], KEY.size, VALUE.size, entries, 0, 0)
    fd = _bpf.bpf(MAP_CREATE, attr)
    ncpu = _bpf.possible_cpus() if kind == 'percpu_hash' else 1
    keys = b''.join(KEY.pack(struct.pack('>I', 0xC6120000 | (i >> 8)), struct.pack('>I', 0xC6130000 | (i & 0xFF)),
                             1024 + i % 60000, 53, 17) for i in range(entries))
    values = b''.join(VALUE.pack(i + c, (i + c) * 100) for i in range(entries) for c in range(ncpu))
    kbuf, vbuf = ctypes.create_string_buffer(keys, len(keys)), ctypes.create_string_buffer(values, len(values))
    count = ctypes.c_uint32(entries)
    attr = ctypes.create_string_buffer(struct.pack('=QQQQIIQQ', 0, 0, ctypes.addressof(kbuf),
                                                   ctypes.addressof(vbuf), entries, fd, 0, 0), 160)
    nr = _bpf._SYSCALL_BPF[platform.machine()]
    if _bpf._syscall().syscall(nr, MAP_UPDATE_BATCH, attr, 160) < 0:
        for i in range(entries):  # a kernel without batch updates
            _bpf.map_update(fd, ctypes.create_string_buffer(keys[i * KEY.size:(i + 1) * KEY.size], KEY.size),
                            ctypes.create_string_buffer(values[i * VALUE.size * ncpu:(i + 1) * VALUE.size * ncpu]))
    del count
    return fd


def timed(calls, rounds):
    """Median wall and CPU time (this thread, user + system) of each of calls {name: fn}, over rounds
    rounds that run every call once, interleaved, so a busy moment of the machine hits all alike.
    On a shared machine the CPU time is the figure that depends least on the other jobs."""
    samples = dict((name, ([], [])) for name in calls)
    results = {}
    for _round in range(rounds):
        for name, fn in calls.items():
            results[name] = None  # freeing the previous result is not part of a read
            w, c = time.perf_counter(), time.thread_time()
            results[name] = fn()
            samples[name][1].append(time.thread_time() - c)
            samples[name][0].append(time.perf_counter() - w)
    return dict((name, (statistics.median(w), statistics.median(c))) for name, (w, c) in samples.items()), results


def bench(kind, entries, rounds, pin_dir):
    fd = make_map(kind, entries)
    path = os.path.join(pin_dir, kind)
    _bpf.obj_pin(fd, path)
    os.close(fd)
    layout = {'key_desc': KEY_DESC, 'leaf_desc': VALUE_DESC}
    out = {'map': kind, 'entries': entries}
    with _metrics.PinnedMap(path, layout) as pm:
        calls = {}
        for method in ('batch', 'iterate'):
            calls[method + ' read'] = lambda method=method: pm.read_raw(method=method)
            calls[method] = lambda method=method: pm.read(method=method)
        times, results = timed(calls, rounds)
        for method in ('batch', 'iterate'):
            raw, (decoded, used) = results[method + ' read'], results[method]
            assert raw[2] == entries and raw[3] == method and used == method and len(decoded) == entries
            out[method] = {'read_wall_s': round(times[method + ' read'][0], 4),
                           'read_cpu_s': round(times[method + ' read'][1], 4),
                           'total_wall_s': round(times[method][0], 4), 'total_cpu_s': round(times[method][1], 4)}
        out['sample'] = sorted(results['batch'][0], key=lambda e: e['value']['packets'])[0]
    out['speedup_cpu'] = round(out['iterate']['total_cpu_s'] / out['batch']['total_cpu_s'], 1)
    out['speedup_wall'] = round(out['iterate']['total_wall_s'] / out['batch']['total_wall_s'], 1)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--entries', type=int, default=65536)
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--json', help='write the results here too')
    args = parser.parse_args()
    pin_dir = '/sys/fs/bpf/netprobe-bench-%d' % os.getpid()
    os.makedirs(pin_dir, mode=0o700)
    try:
        results = [bench(kind, args.entries, args.rounds, pin_dir) for kind in ('hash', 'percpu_hash')]
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
    print('kernel %s, %d CPUs, Python %s, median of %d reads\n'
          % (platform.release(), _bpf.possible_cpus(), platform.python_version(), args.rounds))
    print('| map | entries | method | read + decode, CPU | read + decode, wall | kernel read alone, CPU |')
    print('|---|---|---|---|---|---|')
    for r in results:
        for method, label in (('batch', 'BPF_MAP_LOOKUP_BATCH'), ('iterate', 'per key (GET_NEXT_KEY + LOOKUP)')):
            m = r[method]
            print('| %s | %d | %s | %.3f s | %.3f s | %.3f s |'
                  % (r['map'], r['entries'], label, m['total_cpu_s'], m['total_wall_s'], m['read_cpu_s']))
    print()
    for r in results:
        print('%s: batch is %.1fx faster than per-key iteration (CPU time; %.1fx wall)'
              % (r['map'], r['speedup_cpu'], r['speedup_wall']))
    print('load average while measuring: %s' % ' '.join(open('/proc/loadavg').read().split()[:3]))
    print('\nsample entry: %s' % json.dumps(results[0]['sample']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
