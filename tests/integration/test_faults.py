"""Fault suite, deterministic layer (issue 12): the engine's kernel calls fail at the Nth call.

In-process, as root, against the real kernel. The two seams every kernel-facing call of the engine
goes through are wrapped by a fault injector: bpf(2) (`_bpf.bpf`) and netlink (the pyroute2 IPRoute
that `_netlink.Netns.iproute` hands out: link, tc, get_filters, get_qdiscs, link_lookup). For each
edit type, a dry run counts the calls K of the edit; then for N = 1..K the edit runs with the Nth call
failing, and the chain is read back from the kernel, not from the engine: the program attached to the
hook is run with BPF_PROG_TEST_RUN (bpftool), and each probe of the test chain writes its tag into the
packet, so the packet that comes back lists the probes the kernel actually runs, in order. It must be
the old chain or the new one, never a mix; a rerun without faults must reach the new chain, and the
run after it must find nothing to do and no drift.

The harness uses only the engine's public entry points (_module.chain_from_params, _module.converge,
_facts.gather for swap reads) and what the kernel shows, so it holds across engine rewrites.
Figures (calls per edit, outcome per N, exceptions) are printed; NETPROBE_FAULT_STRICT=0 turns the
old-or-new assertion into a report only.
"""

import errno
import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections import Counter

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from lab import figure, PIN_ROOT, REPO, RUN_ROOT, sh

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _compile, _facts, _module, _netlink

STRICT = os.environ.get('NETPROBE_FAULT_STRICT', '1') != '0'
WATCHED_NETLINK = ('link', 'tc', 'get_filters', 'get_qdiscs', 'get_link', 'get_links', 'link_lookup')
FILES = dict((name, open(os.path.join(REPO, 'bpf', name)).read()) for name in _compile.HEADER_FILES)
FIREWALL = open(os.path.join(REPO, 'bpf', 'probes', 'firewall.c')).read()

# Each probe appends its TAG to a trail at the end of the packet: trail[0] = hops, trail[1 + i] = tag.
TRAIL = 96
PACKET_LEN = 128
TAG_PROBE = r'''
#include "netprobe.h"
#ifndef TAG
#define TAG 1
#endif
BPF_ARRAY(hits, __u64, 1);
NP_METRIC(hits, NP_EXPORT FEATURES);

NP_PROBE(ctx)
{
    __u8 *p = (__u8 *)(long)ctx->data;
    __u8 *end = (__u8 *)(long)ctx->data_end;
    int zero = 0;
    __u64 *h = hits.lookup(&zero);
    if (h)
        __sync_fetch_and_add(h, 1);
    if (p + %d > end)
        return NP_PASS;
    __u8 n = p[%d];
    if (n >= 31)
        return NP_PASS;
    __u8 *q = p + %d + 1 + (n & 31);
    if (q + 1 > end)
        return NP_PASS;
    *q = TAG;
    p[%d] = n + 1;
    return NP_PASS;
}
''' % (PACKET_LEN, TRAIL, TRAIL, TRAIL)


class Injected(Exception):
    pass


class Faults:
    """Counts the engine's kernel calls; the call number fail_at raises (once)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.fail_at = None
        self.failed = None
        self.kinds = Counter()
        real_bpf = _bpf.bpf
        faults = self

        def bpf(cmd, attr):
            faults.tick('bpf(%d)' % cmd, lambda: _bpf.BpfError(errno.EIO, 'injected fault in bpf(%d)' % cmd))
            return real_bpf(cmd, attr)

        monkeypatch.setattr(_bpf, 'bpf', bpf)
        real_iproute = _netlink.Netns.iproute

        def iproute(netns):
            return CountingIPRoute(real_iproute(netns), faults)

        monkeypatch.setattr(_netlink.Netns, 'iproute', iproute)

    def tick(self, what, error):
        self.calls += 1
        self.kinds[what] += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            self.failed = what
            raise error()

    def arm(self, n):
        self.calls, self.fail_at, self.failed, self.kinds = 0, n, None, Counter()


class CountingIPRoute:
    def __init__(self, ipr, faults):
        self._ipr = ipr
        self._faults = faults

    def __getattr__(self, name):
        attr = getattr(self._ipr, name)
        if name not in WATCHED_NETLINK:
            return attr

        def call(*args, **kwargs):
            self._faults.tick('netlink.%s' % name,
                              lambda: _netlink.NetlinkError(errno.EIO, 'injected fault in netlink %s' % name))
            return attr(*args, **kwargs)
        return call


class FakeModule:
    check_mode = False
    params = {}  # an ebpf_chain run's defaults (persist: true)

    def warn(self, _msg):
        pass


class Probe:
    def __init__(self, name, tag=None, swap=False, firewall=None):
        self.name, self.tag, self.swap, self.firewall = name, tag, swap, firewall

    def params(self):
        if self.firewall is not None:
            return dict(source=FIREWALL, probe='firewall', src=None, cflags=[], config=self.firewall)
        source = TAG_PROBE.replace('FEATURES', '| NP_SWAP' if self.swap else '')
        return dict(source=source, probe=None, src=None, cflags=['-DTAG=%d' % self.tag], config=None)


def chain_of(lab):
    # the netlink path: its attach calls go through the netlink seam, and a hard reset can detach it by hand
    return _module.chain_from_params(dict(interface=lab.if_b, netns=lab.ns_b, hook='ingress', mode='xdp',
                                          xdp_mode='skb', xdp_attach='netlink', _netprobe_files=FILES))


def converge(lab, probes):
    return _module.converge(FakeModule(), chain_of(lab),
                            lambda _current: [_module.spec_from_params(p.name, p.params()) for p in probes])


def swap_read(lab):
    filters = _facts.Filters({'netns': [lab.ns_b], 'interfaces': [lab.if_b], 'probes': None, 'per_cpu': False,
                              'top': 10, 'sort_by': None})
    return _facts.gather(filters, ['metrics'], consume=True, warnings=[])


def udp_packet(dport):
    eth = b'\x02' * 6 + b'\x04' * 6 + b'\x08\x00'
    total = PACKET_LEN - 14
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, total, 1, 0, 64, 17, 0, bytes([198, 18, 7, 1]), bytes([198, 18, 7, 2]))
    udp = struct.pack('!HHHH', 40000, dport, total - 20, 0)
    return (eth + ip + udp).ljust(PACKET_LEN, b'\x00')


def head_prog_id(lab):
    link = json.loads(sh('ip', '-n', lab.ns_b, '-d', '-j', 'link', 'show', lab.if_b).stdout)[0]
    xdp = link.get('xdp') or {}
    return (xdp.get('prog') or {}).get('id') or 0


def kernel_run(lab, dport=9):
    """(tags the kernel's chain wrote, return value) for one packet run from the hook's program."""
    head = head_prog_id(lab)
    if not head:
        return (), None
    with tempfile.TemporaryDirectory(prefix='np-fault-') as d:
        data_in, data_out = os.path.join(d, 'in'), os.path.join(d, 'out')
        with open(data_in, 'wb') as f:
            f.write(udp_packet(dport))
        out = subprocess.run(['bpftool', 'prog', 'run', 'id', str(head), 'data_in', data_in, 'data_out', data_out],
                             capture_output=True, text=True, check=True)
        retval = int(out.stdout.split('Return value:')[1].split()[0].rstrip(','))
        with open(data_out, 'rb') as f:
            trail = f.read()[TRAIL:]
    return tuple(trail[1:1 + trail[0]]), retval


def kernel_view(lab, probes):
    """What the kernel does: the tag trail, plus the verdicts of the firewall's ports when there is one."""
    tags, retval = kernel_run(lab)
    verdicts = ()
    if any(p.firewall is not None for p in probes):
        verdicts = tuple(kernel_run(lab, port)[1] for port in (1001, 1002, 1003))
    return tags, verdicts


def expected_view(probes):
    tags = tuple(p.tag for p in probes if p.tag is not None)
    verdicts = ()
    fw = [p for p in probes if p.firewall is not None]
    if fw:
        dropped = set(r['dport'] for r in fw[0].firewall['rules'])
        verdicts = tuple(1 if port in dropped else 2 for port in (1001, 1002, 1003))  # XDP_DROP 1, XDP_PASS 2
    return tags, verdicts


def A():
    return Probe('a', 1)


def B():
    return Probe('b', 2)


def C():
    return Probe('c', 3)


FW_OLD = {'default': 'pass', 'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 1001}]}
FW_NEW = {'default': 'pass', 'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 1002},
                                       {'action': 'drop', 'proto': 'udp', 'dport': 1003}]}

# edit type: (old chain, new chain, edit) with edit None meaning "converge to the new chain"
EDITS = {
    'insert': ([A(), B(), C()], [A(), Probe('x', 9), B(), C()]),
    'patch': ([A(), B(), C()], [A(), Probe('b', 12), C()]),
    'move': ([A(), B(), C()], [A(), C(), B()]),
    'remove': ([A(), B(), C()], [A(), C()]),
    'config': ([A(), Probe('fw', firewall=FW_OLD), C()], [A(), Probe('fw', firewall=FW_NEW), C()]),
    'swap_read': ([A(), Probe('s', 5, swap=True), C()], None),
}


def hard_reset(lab, old):
    """Everything of the test's chain removed by hand, then the old chain built again."""
    ino = str(lab.netns_inode(lab.ns_b))
    sh('ip', '-n', lab.ns_b, 'link', 'set', 'dev', lab.if_b, 'xdpgeneric', 'off', check=False)
    shutil.rmtree(os.path.join(PIN_ROOT, ino), ignore_errors=True)
    shutil.rmtree(os.path.join(RUN_ROOT, 'chains', ino), ignore_errors=True)
    converge(lab, old)


def run_edit(lab, kind, new):
    if kind == 'swap_read':
        return swap_read(lab)
    return converge(lab, new)


@pytest.mark.parametrize('kind', list(EDITS))
def test_a_failed_kernel_call_leaves_the_old_or_the_new_chain(lab, monkeypatch, kind):
    old, new = EDITS[kind]
    new_or_old = new if new is not None else old
    faults = Faults(monkeypatch)
    converge(lab, old)
    want_old, want_new = expected_view(old), expected_view(new_or_old)
    assert kernel_view(lab, old) == want_old, 'the base chain does not run as built'

    faults.arm(None)
    run_edit(lab, kind, new)
    calls, kinds = faults.calls, dict(faults.kinds)
    assert kernel_view(lab, new_or_old) == want_new

    outcomes, errors, bugs = Counter(), Counter(), []
    for n in range(1, calls + 1):
        faults.arm(None)
        try:
            converge(lab, old)  # back to the old chain (no fault)
        except Exception:  # pylint: disable=broad-except
            hard_reset(lab, old)  # a bug of the previous N (reported) must not spill into this one
        assert kernel_view(lab, old) == want_old
        faults.arm(n)
        error = None
        try:
            run_edit(lab, kind, new)
        except Exception as e:  # pylint: disable=broad-except
            error = e
        failed_call = faults.failed
        faults.arm(None)
        seen = kernel_view(lab, new_or_old)
        state = 'old' if seen == want_old else 'new' if seen == want_new else 'MIX'
        outcomes[state] += 1
        if error is not None:
            # the classes _module.run turns into fail_json; any other would reach the user as a traceback
            handled = (OSError, _module.NetprobeError, _netlink.NetlinkError)
            errors['%s%s' % (type(error).__name__, '' if isinstance(error, handled)
                             else ' (not handled by _module.run: the module would print a traceback)')] += 1
        if state == 'MIX':
            bugs.append('N=%d (%s failed, %s): kernel runs %s, old %s, new %s'
                        % (n, failed_call, type(error).__name__ if error else 'no error', seen, want_old, want_new))
        # the next run converges, and the one after finds nothing to do and no drift
        try:
            again = run_edit(lab, kind, new)
            if kind == 'swap_read':
                again = converge(lab, old)
                again = converge(lab, old)
            else:
                again = converge(lab, new)
        except Exception as e:  # pylint: disable=broad-except
            bugs.append('N=%d (%s failed): the next run fails: %s: %s' % (n, failed_call, type(e).__name__, e))
            continue
        if kernel_view(lab, new_or_old) != want_new:
            bugs.append('N=%d (%s failed): after the next run the kernel runs %s, not %s'
                        % (n, failed_call, kernel_view(lab, new_or_old), want_new))
        if again['changed'] or again['drift']:
            bugs.append('N=%d (%s failed): the second run after still changes: drift %s' % (n, failed_call,
                                                                                            again['drift']))
    figure('faults[%s]: %d kernel calls per edit (%s)' % (kind, calls, ', '.join('%s x%d' % kv for kv in
                                                                                 sorted(kinds.items()))))
    figure('faults[%s]: after the Nth call failed the kernel ran: %s; errors raised: %s'
           % (kind, dict(outcomes), dict(errors)))
    for bug in bugs:
        figure('faults[%s]: BUG %s' % (kind, bug))
    assert calls > 0
    if STRICT:
        assert not bugs, '\n'.join(bugs)
