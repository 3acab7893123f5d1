"""No packet skips a probe (issue 9): 200 edits of every kind on a live chain under a continuous flood.

The chain holds a firewall that drops UDP to DROP_PORT, with counters before and after it. A sender in
namespace A floods UDP to DROP_PORT and PASS_PORT through the XDP ingress chain on B's veth while the
chain is edited 200 times (insert at head/middle/tail, remove, patch, the firewall moved to every
position, rule rewrites, mixed edits in one run, xdp_mode changes). Every edit goes through the same
engine path as a module run (observe, plan, apply under the host lock), in-process so that 200 edits
fit in CI; tests/integration/test_chain.py covers the module path itself.
"""

import os
import random
import threading
import time

import pytest

from lab import REPO

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _compile, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.plugin_utils import _prebuilt

DROP_PORT, PASS_PORT = 40009, 40010
FILES = dict((n, open(os.path.join(REPO, 'bpf', n)).read()) for n in _compile.HEADER_FILES)
PROBES = os.path.join(REPO, 'bpf', 'probes')
SHIPPED = _prebuilt.images(['counter', 'firewall'])


def bundled(name, probe, config=None, cflags=None):
    with open(os.path.join(PROBES, probe + '.c')) as f:
        return _chain.ProbeSpec(name, f.read(), 'bundled:' + probe, cflags, config)


def firewall(extra_port=None):
    rules = [{'proto': 'udp', 'dport': DROP_PORT, 'action': 'drop'}]
    if extra_port:
        rules.insert(0, {'proto': 'udp', 'dport': extra_port, 'action': 'drop'})
    return bundled('fw', 'firewall', {'rules': rules})


class Engine:
    """One edit = what ebpf_chain does: lock, observe, plan, apply."""

    def __init__(self, lab):
        self.lab = lab
        self.images = None

    def apply(self, probes, xdp_mode='skb', check=None):
        images = _compile.Images(FILES, shipped=SHIPPED)
        with _state.HostLock(), _chain.Chain(self.lab.if_b, 'ingress', 'xdp', netns=self.lab.ns_b,
                                             xdp_mode=xdp_mode, files=FILES, images=images) as chain:
            chain.observe()
            plan = chain.plan(probes)
            if plan.changes:
                chain.apply(probes, plan)
            if check:
                check(chain)
            return [r.name for r in chain.live], chain.drift

    def destroy(self):
        with _state.HostLock(), _chain.Chain(self.lab.if_b, 'ingress', 'xdp', netns=self.lab.ns_b,
                                             files=FILES) as chain:
            chain.observe()
            chain.destroy()


class Flood:
    """UDP to both ports at a steady rate from A; B counts what arrives per port."""

    def __init__(self, lab, rate=2000):
        self.lab, self.rate = lab, rate
        self.sent = {DROP_PORT: 0, PASS_PORT: 0}
        self.received = {DROP_PORT: 0, PASS_PORT: 0}
        self.stop = threading.Event()
        self.rx = {p: lab.receiver(p) for p in self.sent}
        self.threads = [threading.Thread(target=self._send), threading.Thread(target=self._receive)]

    def _send(self):
        s = self.lab.open_socket(self.lab.ns_a)
        burst, period = max(self.rate // 100, 1), 0.01
        while not self.stop.is_set():
            t = time.time()
            for i in range(burst):
                port = DROP_PORT if i % 2 else PASS_PORT
                try:
                    s.sendto(b'x' * 32, (self.lab.ip_b, port))
                    self.sent[port] += 1
                except OSError:
                    pass
            time.sleep(max(period - (time.time() - t), 0))

    def _receive(self):
        while not self.stop.is_set():
            for port, rx in self.rx.items():
                self.received[port] = rx.count(settle=0.005)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()
        for port, rx in self.rx.items():
            self.received[port] = rx.count(settle=0.3)


def test_two_hundred_edits_under_a_flood_leave_no_gap(lab):
    rnd = random.Random(9)
    engine = Engine(lab)
    counters = {n: bundled(n, 'counter') for n in ('c1', 'c2', 'c3')}
    base = [counters['c1'], firewall(), counters['c2'], counters['c3']]
    engine.apply(base)
    kinds = {}
    edits, chain, xdp_mode, extra, patch = 0, list(base), 'skb', 0, 0

    def edit(kind, probes, mode=None):
        nonlocal edits, chain, xdp_mode
        names, _drift = engine.apply(probes, xdp_mode=mode or xdp_mode)
        assert names == [p.name for p in probes], kind
        chain, xdp_mode, edits = list(probes), mode or xdp_mode, edits + 1
        kinds[kind] = kinds.get(kind, 0) + 1

    def without_extras():
        return [p for p in chain if not p.name.startswith('x')]

    with Flood(lab) as flood:
        time.sleep(0.2)
        while edits < 200:
            step = edits % 10
            if step == 0:
                extra += 1
                where = rnd.choice(['head', 'middle', 'tail'])
                spot = {'head': 0, 'middle': len(chain) // 2, 'tail': len(chain)}[where]
                edit('insert ' + where, chain[:spot] + [bundled('x%d' % extra, 'counter')] + chain[spot:])
            elif step == 1:
                edit('remove', without_extras())
            elif step in (2, 3, 4, 5):
                others = [p for p in chain if p.name != 'fw']
                spot = rnd.randrange(len(others) + 1)
                edit('move firewall to %d' % spot, others[:spot] + [firewall(40100 + edits % 3)] + others[spot:])
            elif step == 6:
                patch += 1
                name = rnd.choice(['c1', 'c2', 'c3'])
                counters[name] = bundled(name, 'counter', cflags=['-DNP_PATCH=%d' % (patch % 2)])
                edit('patch', [counters.get(p.name, p) if p.name == name else p for p in chain])
            elif step == 7:
                edit('config rewrite', [firewall(40200 + edits % 5) if p.name == 'fw' else p for p in chain])
            elif step == 8:
                extra += 1
                mixed = [p for p in chain if p.name != 'fw']
                mixed.reverse()
                mixed.insert(1, bundled('x%d' % extra, 'counter'))
                mixed.insert(rnd.randrange(len(mixed) + 1), firewall())
                edit('mixed (insert, move, reorder)', [p for p in mixed if p.name != 'x%d' % (extra - 1)])
            else:
                if edits % 40 == 9:
                    edit('xdp_mode change', chain, mode='native' if xdp_mode == 'skb' else 'skb')
                else:
                    edit('move firewall to %d' % 0, [firewall()] + [p for p in chain if p.name != 'fw'])
        time.sleep(0.3)
    sent, got = flood.sent, flood.received
    lost = sent[PASS_PORT] - got[PASS_PORT]
    print('\n[no-gap] %d edits (%s)' % (edits, ', '.join('%s: %d' % kv for kv in sorted(kinds.items()))))
    print('[no-gap] sent %d to the dropped port, %d to the passed port; received %d bypassed (must be 0), '
          '%d passed, %d lost' % (sent[DROP_PORT], sent[PASS_PORT], got[DROP_PORT], got[PASS_PORT], lost))
    assert edits == 200 and sent[DROP_PORT] > 5000
    assert got[DROP_PORT] == 0, 'packets bypassed the firewall'
    assert lost == 0, 'packets the chain must pass were lost'
    engine.destroy()


def test_a_chain_longer_than_the_kernel_runs_is_refused_before_anything_changes(lab):
    engine = Engine(lab)
    base = [bundled('c0', 'counter'), firewall()]
    engine.apply(base)
    long_chain = [bundled('c%d' % i, 'counter') for i in range(36)] + [firewall()]
    with pytest.raises(NetprobeError) as refused:
        engine.apply(long_chain)
    assert 'at most 33 tail calls' in refused.value.msg and '37 probes' in refused.value.msg
    assert 'at most 34 probes' in refused.value.msg
    names, drift = engine.apply(base)
    assert names == ['c0', 'fw'] and drift == []
    rx = lab.receiver(DROP_PORT)
    lab.send_udp(5, DROP_PORT)
    assert rx.count() == 0  # the firewall still drops
    engine.destroy()
