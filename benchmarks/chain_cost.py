# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-packet cost of netprobe chains against a bare program and a hand-written tail-call chain.

Everything runs with BPF_PROG_TEST_RUN on one 64-byte Ethernet/IPv4/UDP packet, in one process,
interleaved: every round measures every variant once, in a fresh random order, so whatever else
the machine is doing hits all variants alike. Medians over the rounds.

Variants, for XDP and for TC:
  bare         one plain bcc program: return PASS (and `bare-counter`: the counter's work, then PASS)
  netprobe     chains of 1, 2, 4, 8 probes built and loaded by the real engine (_compile.build_image, the
               same call the module makes) with a pinned PROG_ARRAY under a temporary pin dir;
               probes: a pass-through (NP_PROBE returning NP_PASS) and the bundled counter; each
               with the metadata clear (NP_USES_META, what the engine compiles today) and without
  hand-written plain bcc, no netprobe header: each program does the same work, then
               bpf_tail_call(ctx, &progs, CONST) into its own PROG_ARRAY

A chain of N programs is the first N programs of the set: links 0..N-2 set, link N-1 cleared
(the engine's own remove step) before each measurement.

Timing: the kernel reports the average in whole ns (floor), too coarse for 1-ns targets. Each
call is therefore also timed by this thread's CPU time (CLOCK_THREAD_CPUTIME_ID, ns-exact, and
blind to the time the thread waits while other jobs run: the wall clock is not usable on a shared
machine). A call carries a fixed cost besides the runs (XDP: the kernel swaps the program into the
XDP dispatcher and back, ~0.3 ms; TC: building the skb): it is measured each round with repeat=2
calls, and its median is subtracted before dividing by repeat. The kernel's whole-ns figure is kept
as a cross-check; a sample more than 1.5 ns off it was disturbed (an interrupt storm, a stolen
vCPU) and is measured again.

Run as root: `make bench`, or `.venv/bin/python benchmarks/chain_cost.py [--rounds N] [--json F]`.
"""

import argparse
import ctypes
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import struct
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = (1, 2, 4, 8)
MODES = ('xdp', 'tc')
PASS_RETVAL = {'xdp': 2, 'tc': 0xFFFFFFFF}  # XDP_PASS, TC_ACT_UNSPEC (NP_PASS on TC: let the hook's others run)


def import_engine():
    """Import the collection's module_utils as Ansible would: ansible_collections.netprobe.ebpf."""
    root = tempfile.mkdtemp(prefix='npbench-coll-')
    os.makedirs(os.path.join(root, 'ansible_collections', 'netprobe'))
    os.symlink(REPO, os.path.join(root, 'ansible_collections', 'netprobe', 'ebpf'))
    sys.path.insert(0, root)
    from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _compile
    return root, _bpf, _compile


def udp_packet():
    """64 bytes: Ethernet, IPv4 198.18.0.1 -> 198.18.0.2 (benchmarking range), UDP 40000 -> 9, payload."""
    payload = b'\0' * 22
    udp = struct.pack('!HHHH', 40000, 9, 8 + len(payload), 0)
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp) + len(payload), 0, 0x4000, 64, 17, 0,
                     bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
    csum = sum(struct.unpack('!10H', ip))
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip = ip[:10] + struct.pack('!H', ~csum & 0xFFFF) + ip[12:]
    eth = bytes.fromhex('020000000002020000000001') + struct.pack('!H', 0x0800)
    pkt = eth + ip + udp + payload
    assert len(pkt) == 64
    return pkt


# --- the programs ---------------------------------------------------------------------------------

PASS_PROBE = '''
#include "netprobe.h"
NP_PROBE(ctx)
{
    return NP_PASS;
}
'''

# Plain C, no netprobe header: the same work as netprobe.h's np_parse() + bpf/probes/counter.c.
PLAIN_PRELUDE = '''
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#ifdef MODE_XDP
#define CTX struct xdp_md
#define PASS XDP_PASS
#else
#define CTX struct __sk_buff
#define PASS TC_ACT_UNSPEC
#endif

struct proto_key { __u16 l3_proto; __u8 l4_proto; __u8 pad; };
struct traffic { __u64 packets; __u64 bytes; };
struct parsed {
    void *data; void *data_end; struct ethhdr *eth; struct iphdr *ip4; struct ipv6hdr *ip6;
    struct tcphdr *tcp; struct udphdr *udp; __u32 len; __u16 l3_proto; __u8 l4_proto;
    __u16 sport; __u16 dport;
};

static __always_inline void parse(CTX *ctx, struct parsed *p)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    void *l4 = 0;

    __builtin_memset(p, 0, sizeof(*p));
    p->data = data;
    p->data_end = data_end;
    p->len = data_end - data;
    p->eth = data;
    if ((void *)(p->eth + 1) > data_end)
        return;
    p->l3_proto = bpf_ntohs(p->eth->h_proto);
    if (p->l3_proto == ETH_P_IP) {
        struct iphdr *ip4 = (void *)(p->eth + 1);
        if ((void *)(ip4 + 1) > data_end)
            return;
        p->ip4 = ip4;
        p->l4_proto = ip4->protocol;
        l4 = (void *)ip4 + ip4->ihl * 4;
    } else if (p->l3_proto == ETH_P_IPV6) {
        struct ipv6hdr *ip6 = (void *)(p->eth + 1);
        if ((void *)(ip6 + 1) > data_end)
            return;
        p->ip6 = ip6;
        p->l4_proto = ip6->nexthdr;
        l4 = ip6 + 1;
    } else {
        return;
    }
    if (p->l4_proto == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) <= data_end) {
            p->tcp = tcp;
            p->sport = bpf_ntohs(tcp->source);
            p->dport = bpf_ntohs(tcp->dest);
        }
    } else if (p->l4_proto == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) <= data_end) {
            p->udp = udp;
            p->sport = bpf_ntohs(udp->source);
            p->dport = bpf_ntohs(udp->dest);
        }
    }
}

'''

# bcc rewrites map calls only outside macros: an inline function after the map's declaration
COUNTER = '''
BPF_PERCPU_HASH(by_proto, struct proto_key, struct traffic, 256);

static __always_inline void count(CTX *ctx)
{
    struct parsed pkt;
    struct proto_key key = {};
    struct traffic zero = {};
    struct traffic *t;

    parse(ctx, &pkt);
    key.l3_proto = pkt.l3_proto;
    key.l4_proto = pkt.l4_proto;
    t = by_proto.lookup_or_try_init(&key, &zero);
    if (t) {
        t->packets += 1;
        t->bytes += pkt.len;
    }
}
'''

BARE = PLAIN_PRELUDE + COUNTER + '''

int bare_pass(CTX *ctx)
{
    return PASS;
}

int bare_counter(CTX *ctx)
{
    count(ctx);
    return PASS;
}
'''


def hand_chain_source(kind, size):
    """size programs hop0..hop<size-1>: the same work, then a tail call through a constant slot."""
    lines = [PLAIN_PRELUDE, 'BPF_PROG_ARRAY(progs, %d);' % size]
    if kind == 'counter':
        lines.append(COUNTER)
    for i in range(size):
        work = 'count(ctx);' if kind == 'counter' else ''
        lines.append('int hop%d(CTX *ctx)\n{\n\t%s\n\tprogs.call(ctx, %d);\n\treturn PASS;\n}\n' % (i, work, i))
    return '\n'.join(lines)


# --- measuring --------------------------------------------------------------------------------------


class Variant:
    """One thing to TEST_RUN: a head program, and the link layout that makes a chain of `length`."""

    def __init__(self, mode, family, kind, length, head_fd, chain=None):
        self.mode, self.family, self.kind, self.length = mode, family, kind, length
        self.head_fd = head_fd
        self.chain = chain  # (progs map fd, [prog fds]) or None
        self.kernel_ns = []
        self.cpu_total_ns = []
        self.ns = []
        self.retries = 0

    @property
    def key(self):
        return (self.mode, self.family, self.kind, self.length)

    def wire(self, bpf):
        if self.chain is None:
            return
        progs_fd, fds = self.chain
        for slot in range(self.length - 1):
            bpf.map_update(progs_fd, ctypes.c_uint32(slot), ctypes.c_uint32(fds[slot + 1]))
        bpf.map_delete(progs_fd, ctypes.c_uint32(self.length - 1))


def run_cpu_ns(bpf, fd, packet, repeat):
    """(retval, kernel's average ns, this thread's CPU ns for the whole call)."""
    start = time.thread_time_ns()
    retval, kernel_ns = bpf.prog_test_run(fd, packet, repeat)
    return retval, kernel_ns, time.thread_time_ns() - start


def measure(bpf, variant, packet, repeat, overhead_ns, max_tries=5):
    variant.wire(bpf)
    for _try in range(max_tries):
        retval, kernel_ns, cpu_ns = run_cpu_ns(bpf, variant.head_fd, packet, repeat)
        if retval != PASS_RETVAL[variant.mode]:
            raise RuntimeError('%s returned %d, expected PASS' % (variant.key, retval))
        if -0.5 < (cpu_ns - overhead_ns) / repeat - kernel_ns < 1.5:
            break
        variant.retries += 1
    variant.kernel_ns.append(kernel_ns)
    variant.cpu_total_ns.append(cpu_ns)


class Bench:
    def __init__(self, bpf, compile_, bcc):
        self.bpf, self.compile, self.bcc = bpf, compile_, bcc
        self.pin_dir = '/sys/fs/bpf/npbench-%s' % secrets.token_hex(4)
        self.objects = []   # bcc objects and LoadedPrograms kept alive until the end
        self.fds_to_close = []
        self.variants = []
        with open(os.path.join(REPO, 'bpf', 'probes', 'counter.c')) as f:
            self.counter_source = f.read()
        self.files = {}
        for name in self.compile.HEADER_FILES:
            with open(os.path.join(REPO, 'bpf', name)) as f:
                self.files[name] = f.read()

    def prog_type(self, mode):
        return self.bcc.BPF.XDP if mode == 'xdp' else self.bcc.BPF.SCHED_CLS

    def build(self):
        os.makedirs(self.pin_dir, mode=0o700)
        for mode in MODES:
            bare = self.bcc.BPF(text=BARE, cflags=['-DMODE_%s' % mode.upper()])
            self.objects.append(bare)
            for kind in ('pass', 'counter'):
                fn = bare.load_func('bare_' + kind, self.prog_type(mode))
                self.variants.append(Variant(mode, 'bare', kind, 1, fn.fd))
            for kind in ('pass', 'counter'):
                self.build_hand(mode, kind)
                for meta in (True, False):
                    self.build_netprobe(mode, kind, meta)

    def build_hand(self, mode, kind):
        size = max(LENGTHS)
        b = self.bcc.BPF(text=hand_chain_source(kind, size), cflags=['-DMODE_%s' % mode.upper()])
        self.objects.append(b)
        fds = [b.load_func('hop%d' % i, self.prog_type(mode)).fd for i in range(size)]
        progs_fd = b['progs'].map_fd
        for n in LENGTHS:
            self.variants.append(Variant(mode, 'hand-written', kind, n, fds[0], (progs_fd, fds)))

    def build_netprobe(self, mode, kind, meta):
        """The engine's own build and load: one image, a copy per slot i for probe i, as Chain.apply() does."""
        source = PASS_PROBE if kind == 'pass' else self.counter_source
        # build_image always passes -DNP_USES_META; a later -U wins in clang
        cflags = [] if meta else ['-UNP_USES_META']
        image = self.compile.build_image('p', source, cflags, mode, self.files, 'bench')
        meta_def = image.plumbing_map('np_meta_store')
        progs_fd = self.bpf.map_create('prog_array', 4, 4, self.compile.CHAIN_SLOTS)
        meta_fd = self.bpf.map_create('percpu_array', 4, meta_def.value_size if meta_def else 16, 1)
        self.fds_to_close += [progs_fd, meta_fd]
        fds = []
        for slot in range(max(LENGTHS)):
            maps = dict((m.name, m.create()) for m in image.own_maps())
            self.fds_to_close += list(maps.values())
            fds.append(image.load(slot, dict(maps, np_chain=progs_fd, np_meta_store=meta_fd), 'p%d' % slot))
            self.fds_to_close.append(fds[-1])
        family = 'netprobe' if meta else 'netprobe-nometa'
        for n in LENGTHS:
            self.variants.append(Variant(mode, family, kind, n, fds[0], (progs_fd, fds)))

    def call_overhead(self, mode, packet, samples=3):
        """CPU ns of a TEST_RUN call that runs the bare program twice: the fixed cost of a call."""
        bare = next(v for v in self.variants if v.key == (mode, 'bare', 'pass', 1))
        return statistics.median(run_cpu_ns(self.bpf, bare.head_fd, packet, 2)[2] for _sample in range(samples))

    def run(self, rounds, repeat, packet, progress=True):
        self.overhead = dict((mode, []) for mode in MODES)
        for mode in MODES:
            self.overhead[mode].append(self.call_overhead(mode, packet))
        for variant in self.variants:  # warm-up: first insert into the counters' hashes, caches
            measure(self.bpf, variant, packet, repeat // 10, 0, max_tries=1)
            variant.kernel_ns, variant.cpu_total_ns, variant.retries = [], [], 0
        for r in range(rounds):
            order = list(self.variants)
            random.shuffle(order)
            for mode in MODES:
                self.overhead[mode].append(self.call_overhead(mode, packet))
            overhead = dict((mode, statistics.median(v)) for mode, v in self.overhead.items())
            for variant in order:
                measure(self.bpf, variant, packet, repeat, overhead[variant.mode])
            if progress:
                sys.stderr.write('\rround %d/%d' % (r + 1, rounds))
                sys.stderr.flush()
        if progress:
            sys.stderr.write('\n')
        overhead = dict((mode, statistics.median(v)) for mode, v in self.overhead.items())
        for variant in self.variants:
            variant.ns = [(c - overhead[variant.mode]) / repeat for c in variant.cpu_total_ns]
        return overhead

    def close(self):
        for fd in self.fds_to_close:
            os.close(fd)
        for obj in self.objects:
            if hasattr(obj, 'close'):
                obj.close()
            else:
                obj.cleanup()
        self.objects = []
        shutil.rmtree(self.pin_dir, ignore_errors=True)


# --- report -----------------------------------------------------------------------------------------


def slope(points):
    """Least-squares ns per added program over (length, ns) points."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def machine():
    model = ''
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    with open('/proc/sys/net/core/bpf_jit_enable') as f:
        jit = f.read().strip()
    return {'kernel': platform.release(), 'cpu': model, 'cpus': os.cpu_count(), 'jit': jit}


def quartiles(values):
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[0], q[2]


def paired(by_key, mode, family, kind):
    """Round by round (all variants of a round ran within seconds of each other): the one-probe/bare
    ratio and the per-probe slope minus the hand-written one. Median and quartiles over rounds."""
    bare = by_key[(mode, 'bare', kind, 1)].ns
    ours = [by_key[(mode, family, kind, n)].ns for n in LENGTHS]
    hand = [by_key[(mode, 'hand-written', kind, n)].ns for n in LENGTHS]
    ratio, hop_diff = [], []
    for r in range(len(bare)):
        ratio.append(ours[0][r] / bare[r])
        hop_diff.append(slope([(n, o[r]) for n, o in zip(LENGTHS, ours)])
                        - slope([(n, h[r]) for n, h in zip(LENGTHS, hand)]))
    return {'paired_one_probe_vs_bare': quartiles(ratio), 'paired_hop_minus_hand_hop_ns': quartiles(hop_diff)}


def summarise(variants):
    med = dict((v.key, statistics.median(v.ns)) for v in variants)
    kmed = dict((v.key, statistics.median(v.kernel_ns)) for v in variants)
    spread = dict((v.key, (statistics.quantiles(v.ns, n=4)[0], statistics.quantiles(v.ns, n=4)[2])
                   if len(v.ns) >= 4 else (min(v.ns), max(v.ns))) for v in variants)
    retries = sum(v.retries for v in variants)
    by_key = dict((v.key, v) for v in variants)
    results = {'ns': {}, 'kernel_ns': {}, 'iqr': {}, 'targets': {}, 'retries': retries}
    for key in med:
        name = '/'.join(str(k) for k in key)
        results['ns'][name] = med[key]
        results['kernel_ns'][name] = kmed[key]
        results['iqr'][name] = spread[key]
        results.setdefault('samples_ns', {})[name] = by_key[key].ns
    for mode in MODES:
        for kind in ('pass', 'counter'):
            bare = med[(mode, 'bare', kind, 1)]
            hand = [(n, med[(mode, 'hand-written', kind, n)]) for n in LENGTHS]
            hand_hop = slope(hand)
            t = {'bare_ns': bare, 'hand_hop_ns': hand_hop, 'hand_1_ns': hand[0][1]}
            for family in ('netprobe', 'netprobe-nometa'):
                ours = [(n, med[(mode, family, kind, n)]) for n in LENGTHS]
                hop = slope(ours)
                t[family] = {
                    'one_probe_ns': ours[0][1], 'one_probe_vs_bare': ours[0][1] / bare,
                    'hop_ns': hop, 'hop_minus_hand_hop_ns': hop - hand_hop,
                    'vs_hand': dict((n, o / h) for (n, o), (_n, h) in zip(ours, hand)),
                    'vs_bare': dict((n, o / bare) for n, o in ours),
                }
                t[family].update(paired(by_key, mode, family, kind))
            results['targets']['%s/%s' % (mode, kind)] = t
    return results


def markdown(results, info, rounds, repeat):
    out = []
    out.append('Machine: Linux %s, %s (%d CPUs, shared with other jobs), JIT %s. %d rounds x %d runs '
               'per variant, interleaved; median of rounds; ns from the thread\'s CPU time less the fixed '
               'cost of a call (XDP %.0f us, TC %.0f us), the kernel\'s whole-ns figure in brackets; '
               '%d disturbed samples re-measured.'
               % (info['kernel'], info['cpu'], info['cpus'], info['jit'], rounds, repeat,
                  results['call_overhead_ns']['xdp'] / 1000, results['call_overhead_ns']['tc'] / 1000,
                  results['retries']))
    ns, kns = results['ns'], results['kernel_ns']
    for mode in MODES:
        for kind in ('pass', 'counter'):
            t = results['targets']['%s/%s' % (mode, kind)]
            probe = 'pass-through' if kind == 'pass' else 'counter'
            out.append('')
            out.append('### %s, %s probes' % (mode.upper(), probe))
            out.append('')
            out.append('Bare one-program %s: %.2f ns [%d].' % (
                'PASS' if kind == 'pass' else 'counter', t['bare_ns'], kns['%s/bare/%s/1' % (mode, kind)]))
            out.append('')
            out.append('| probes | hand-written ns | netprobe ns | netprobe / hand | netprobe / bare '
                       '| no meta clear ns | no meta / hand | no meta / bare |')
            out.append('|---:|---:|---:|---:|---:|---:|---:|---:|')
            for n in LENGTHS:
                h = '%s/hand-written/%s/%d' % (mode, kind, n)
                o = '%s/netprobe/%s/%d' % (mode, kind, n)
                q = '%s/netprobe-nometa/%s/%d' % (mode, kind, n)
                out.append('| %d | %.2f [%d] | %.2f [%d] | %.3f | %.3f | %.2f [%d] | %.3f | %.3f |' % (
                    n, ns[h], kns[h], ns[o], kns[o], ns[o] / ns[h], ns[o] / t['bare_ns'],
                    ns[q], kns[q], ns[q] / ns[h], ns[q] / t['bare_ns']))
            out.append('')
            out.append('Per added program (least squares over 1, 2, 4, 8): hand-written %.2f ns, netprobe %.2f ns '
                       '(%+.2f), netprobe without the meta clear %.2f ns (%+.2f).' % (
                           t['hand_hop_ns'], t['netprobe']['hop_ns'], t['netprobe']['hop_minus_hand_hop_ns'],
                           t['netprobe-nometa']['hop_ns'], t['netprobe-nometa']['hop_minus_hand_hop_ns']))
    out.append('')
    out.append('### Paired, round by round')
    out.append('')
    out.append('Each round ran every variant within seconds: the one-probe/bare ratio and the per-probe slope '
               'minus the hand-written slope computed inside each round, then median [quartiles] over rounds.')
    out.append('')
    out.append('| hook, probe | variant | one probe / bare | per probe - hand-written hop, ns |')
    out.append('|---|---|---:|---:|')
    for mode in MODES:
        for kind in ('pass', 'counter'):
            t = results['targets']['%s/%s' % (mode, kind)]
            for family in ('netprobe', 'netprobe-nometa'):
                f = t[family]
                out.append('| %s, %s | %s | %.3f [%.3f, %.3f] | %+.2f [%+.2f, %+.2f] |' % (
                    mode.upper(), 'pass-through' if kind == 'pass' else 'counter',
                    'engine as compiled (meta clear)' if family == 'netprobe' else 'without the meta clear',
                    *(f['paired_one_probe_vs_bare'] + f['paired_hop_minus_hand_hop_ns'])))
    return '\n'.join(out)


def verdicts(results):
    lines = []
    for name, t in sorted(results['targets'].items()):
        for family in ('netprobe', 'netprobe-nometa'):
            f = t[family]
            lines.append('%-12s %-16s one probe %.2f ns = %.3fx bare (target <= 1.15: %s); per probe %.2f ns vs '
                         'hand-written hop %.2f ns: %+.2f ns (target within 1 ns: %s)' % (
                             name, family, f['one_probe_ns'], f['one_probe_vs_bare'],
                             'met' if f['one_probe_vs_bare'] <= 1.15 else 'MISSED', f['hop_ns'], t['hand_hop_ns'],
                             f['hop_minus_hand_hop_ns'], 'met' if abs(f['hop_minus_hand_hop_ns']) <= 1.0 else 'MISSED'))
            lines.append('%-12s %-16s paired by round: one probe / bare %.3f, per probe - hand-written hop %+.2f ns'
                         % ('', '', f['paired_one_probe_vs_bare'][0], f['paired_hop_minus_hand_hop_ns'][0]))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rounds', type=int, default=25)
    parser.add_argument('--repeat', type=int, default=1000000, help='runs per TEST_RUN call')
    parser.add_argument('--json', help='write the raw figures here')
    parser.add_argument('--markdown', help='write the tables here')
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('run as root (BPF_PROG_TEST_RUN, pins)')

    coll_root, bpf, compile_ = import_engine()
    bench = None
    try:
        info, warning = compile_.prepare_headers()
        if warning:
            sys.stderr.write('warning: %s\n' % warning)
        bcc = compile_.import_bcc()
        bench = Bench(bpf, compile_, bcc)
        t0 = time.monotonic()
        bench.build()
        sys.stderr.write('built %d variants in %.0f s\n' % (len(bench.variants), time.monotonic() - t0))
        overhead = bench.run(args.rounds, args.repeat, udp_packet())
        results = summarise(bench.variants)
        results['call_overhead_ns'] = overhead
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(coll_root, ignore_errors=True)
    info = machine()
    results['machine'] = info
    results['rounds'], results['repeat'] = args.rounds, args.repeat
    table = markdown(results, info, args.rounds, args.repeat)
    print(table)
    print()
    print(verdicts(results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1, sort_keys=True)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(table + '\n')


if __name__ == '__main__':
    main()
