# -*- coding: utf-8 -*-
"""Issue 13's must-holds through the modules, on the real kernel with a flood: XDP on a bpf_link and TC on
TCX (ingress and egress) with edits under traffic and zero loss; a foreign TCX program attached by the
test keeps running, keeps its place and sees the traffic in the declared order; `xdpgeneric off` against
a linked chain; cls_bpf -> TCX -> cls_bpf under a flood without a lost packet."""

import ctypes
import glob
import json
import os
import socket
import sys
import threading
import time

import pytest

from lab import REPO, run_module, sh

sys.path.insert(0, os.path.join(REPO, '.cache', 'collections'))
from ansible_collections.netprobe.ebpf.plugins.module_utils import _attach, _bpf, _netlink  # noqa: E402

import tinybpf  # noqa: E402

SO_RCVBUFFORCE = 33
PORT = 9400

# Counts packets in seen[0] when skb->mark carried EXPECT on entry, else in seen[1]; then marks TAG.
# (On XDP there is no mark: it counts everything in seen[0].)
ORDER_PROBE = r'''
#include "netprobe.h"
BPF_ARRAY(seen, u64, 2);
NP_PROBE(ctx)
{
    u32 k = 0;
#ifdef NP_MODE_TC
    k = ctx->mark == EXPECT ? 0 : 1;
    ctx->mark = TAG;
#endif
    u64 *v = seen.lookup(&k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return NP_PASS;
}
'''


def probe(name, expect=0, tag=0, version=0):
    return {'name': name, 'source': ORDER_PROBE,
            'cflags': ['-DEXPECT=%d' % expect, '-DTAG=%d' % tag, '-DVERSION=%d' % version]}


def chain(lab, hook='ingress', mode='xdp', probes=(), **extra):
    args = dict(interface=lab.if_b, netns=lab.ns_b, hook=hook, mode=mode, probes=list(probes), purge=True)
    args.update(extra)
    res = run_module('ebpf_chain', args)
    assert not res.get('failed'), res.get('msg')
    return res


def seen(lab, mode, hook, name, key=0):
    """seen[key] of probe name, summed over every map generation still pinned (a patch may start fresh)."""
    ino = lab.netns_inode(lab.ns_b)
    total = 0
    for pin in glob.glob('/sys/fs/bpf/netprobe/%d/%s/%s-%s/%s/g*/maps/seen' % (ino, lab.if_b, mode, hook, name)):
        fd = _bpf.obj_get(pin)
        value = ctypes.c_uint64(0)
        _bpf.map_lookup(fd, ctypes.c_uint32(key), value)
        os.close(fd)
        total += value.value
    return total


class Flood:
    """UDP from A to B (about 3000 packets/s) in a thread until the block ends; a second thread drains a
    receiver with a big buffer and counts arrivals."""

    def __init__(self, lab, reverse=False):
        src, dst_ns = (lab.ns_b, lab.ns_a) if reverse else (lab.ns_a, lab.ns_b)
        self.dst = (lab.ip_a if reverse else lab.ip_b, PORT)
        self.tx = lab.open_socket(src)
        self.rx = lab.open_socket(dst_ns)
        self.rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.rx.bind(('0.0.0.0', PORT))
        self.rx.settimeout(0.2)
        self.sent = self.received = 0
        self.running = self.draining = True
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._drain, daemon=True)]

    def _send(self):
        while self.running:
            for _n in range(32):
                self.tx.sendto(b'p' * 32, self.dst)
                self.sent += 1
            time.sleep(0.01)

    def _drain(self):
        while True:
            try:
                self.rx.recv(64)
                self.received += 1
            except socket.timeout:
                if not self.draining:
                    return

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        self.running = False
        self.threads[0].join()
        time.sleep(0.3)
        self.draining = False
        self.threads[1].join()


@pytest.mark.parametrize('mode, hook', [('xdp', 'ingress'), ('tc', 'ingress'), ('tc', 'egress')])
def test_link_paths_with_edits_under_a_flood_lose_nothing(lab, mode, hook):
    """XDP on a bpf_link, TC on TCX: insert at the head, patch the head, remove it, under a flood. The tail
    probe counts every packet once and the receiver gets every one."""
    base = chain(lab, hook, mode, [probe('tail')])
    assert base['chain']['attach']['attach_path'] == ('xdp-link' if mode == 'xdp' else 'tcx')
    flood = Flood(lab, reverse=hook == 'egress')  # egress of vb: B sends to A
    with flood:
        chain(lab, hook, mode, [probe('head'), probe('tail')])
        chain(lab, hook, mode, [probe('head', version=1), probe('tail')])
        res = chain(lab, hook, mode, [probe('tail')])
    assert res['chain']['attach']['head_link_id'] and not res['drift']
    assert flood.sent > 500
    assert flood.received == flood.sent, (flood.sent, flood.received)
    assert seen(lab, mode, hook, 'tail') + seen(lab, mode, hook, 'tail', 1) == flood.sent


@pytest.mark.parametrize('place', ['first', 'last', 'before', 'after'])
def test_foreign_tcx_program_keeps_its_place_and_sees_traffic_in_order(lab, place):
    """A foreign TCX program (attached by the test, not by netprobe) and a chain declared before or after
    it: per packet, whichever runs second sees the mark of the first. Under edits of the chain (a patch,
    an insert at the head) the foreign program keeps running at its place."""
    ns = _netlink.Netns(lab.ns_b)
    with ns.iproute() as ipr:
        ifindex = _netlink.link_index(ipr, lab.if_b, ns)
    ours_first = place in ('first', 'before')
    foreign = tinybpf.marker(0x4E01 if ours_first else 0, 0xF0F0, name='other_tool')
    with _netlink.in_netns(ns):
        link = _bpf.link_create(foreign.fd, ifindex, _bpf.ATTACH_TCX_INGRESS, 0, 0)
    try:
        position = {'before': foreign.id, 'after': 'other_tool'}.get(place, place)
        position = {place: position} if place in ('before', 'after') else position
        expect = 0 if ours_first else 0xF0F0

        def run(probes):
            return chain(lab, 'ingress', 'tc', probes, tc_attach='tcx', tc_position=position)
        res = run([probe('p', expect, 0x4E01)])
        attach = res['chain']['attach']
        assert attach['tcx_index'] == (0 if ours_first else 1), attach
        assert [(p['prog_id'], p['name'], p['kind']) for p in attach['foreign_programs']] == [
            (foreign.id, 'other_tool', 'tcx')]
        with Flood(lab) as flood:
            run([probe('p', expect, 0x4E01, version=1)])
            # a new head: its first probe marks, the old one (now second) sees ours, not the foreign mark
            run([probe('q', expect, 0x4E01), probe('p', 0x4E01, 0x4E01, version=1)])
            res = run([probe('p', expect, 0x4E01, version=2)])
        assert res['chain']['attach']['tcx_index'] == (0 if ours_first else 1)
        order = [p.prog_id for p in _attach.tcx_programs(_attach.Target(ns, None, ifindex, lab.if_b, 'ingress', ''))]
        assert (order.index(foreign.id) == 1) == ours_first and len(order) == 2
        assert flood.received == flood.sent > 500
        assert (foreign.hits(0), foreign.hits(1)) == (flood.sent, 0), 'the foreign program saw packets out of order'
        in_order = seen(lab, 'tc', 'ingress', 'p') + seen(lab, 'tc', 'ingress', 'q')
        out_of_order = seen(lab, 'tc', 'ingress', 'p', 1) + seen(lab, 'tc', 'ingress', 'q', 1)
        assert out_of_order == 0 and in_order >= flood.sent
        chain(lab, 'ingress', 'tc', [], state='absent')
        assert [p.prog_id for p in _attach.tcx_programs(
            _attach.Target(ns, None, ifindex, lab.if_b, 'ingress', ''))] == [foreign.id], 'the foreign one must stay'
    finally:
        os.close(link)
        foreign.close()


def test_xdpgeneric_off_against_a_linked_chain_and_a_netlink_chain(lab):
    """On a bpf_link the command fails and the chain keeps running; on netlink it succeeds, and the next run
    reports the drift and repairs it. Never a silent loss."""
    chain(lab, probes=[probe('c')])
    res = sh('ip', '-n', lab.ns_b, 'link', 'set', 'dev', lab.if_b, 'xdpgeneric', 'off', check=False)
    assert res.returncode != 0, res
    with Flood(lab) as flood:
        pass
    assert seen(lab, 'xdp', 'ingress', 'c') == flood.sent == flood.received
    res = chain(lab, probes=[probe('c')])
    assert not res['changed'] and not res['drift'] and res['chain']['attach']['attach_path'] == 'xdp-link'

    chain(lab, probes=[probe('c')], xdp_attach='netlink')
    sh('ip', '-n', lab.ns_b, 'link', 'set', 'dev', lab.if_b, 'xdpgeneric', 'off')
    facts = run_module('ebpf_facts', {'gather_subset': ['chains']})
    mine = [c for c in facts['ansible_facts']['netprobe']['chains'] if c['netns_id'] == lab.netns_inode(lab.ns_b)]
    assert mine and not mine[0]['attached'] and any('detached' in d for d in mine[0]['drift']), mine
    res = chain(lab, probes=[probe('c')], xdp_attach='netlink')
    assert res['changed'] and any('detached' in d for d in res['drift'])
    assert res['chain']['attached'] and res['chain']['attach']['attach_path'] == 'xdp-netlink'


def test_migration_cls_bpf_to_tcx_and_back_under_a_flood_loses_nothing(lab):
    """New attachment first, then the old one: every packet arrives, every packet is counted at least once
    (during the overlap some twice)."""
    chain(lab, 'ingress', 'tc', [probe('c')], tc_attach='cls_bpf')
    with Flood(lab) as flood:
        for how, path in (('tcx', 'tcx'), ('cls_bpf', 'tc-cls_bpf'), ('tcx', 'tcx')):
            res = chain(lab, 'ingress', 'tc', [probe('c')], tc_attach=how)
            assert res['changed'] and res['chain']['attach']['attach_path'] == path
            assert any('migrated' in d for d in res['drift'])
    assert flood.sent > 500 and flood.received == flood.sent
    counted = seen(lab, 'tc', 'ingress', 'c') + seen(lab, 'tc', 'ingress', 'c', 1)
    assert counted >= flood.sent


def test_foreign_xdp_program_fails_with_what_is_there(lab):
    ns = _netlink.Netns(lab.ns_b)
    other = tinybpf.counter(tinybpf.XDP, tinybpf.XDP_PASS, name='xdp_dispatcher')
    try:
        with ns.iproute() as ipr:
            ifindex = _netlink.link_index(ipr, lab.if_b, ns)
            _netlink.xdp_attach(ipr, ifindex, other.fd, 'skb')
        res = run_module('ebpf_chain', dict(interface=lab.if_b, netns=lab.ns_b, probes=[{'name': 'c', 'probe': 'counter'}]))
        assert res.get('failed') and 'libxdp multi-program dispatcher (xdp_dispatcher, id %d)' % other.id in res['msg']
        with ns.iproute() as ipr:
            assert _netlink.xdp_query(ipr, ifindex)[0] == other.id
    finally:
        other.close()


def test_attach_paths_are_tried_once_per_boot_and_a_bad_record_is_tried_again(lab):
    """A new chain with attach auto tries the kernel's paths in a throwaway namespace (about 0.1 s); the
    answer is kept for the boot, used by the next new chain, and a damaged or stale one is ignored."""
    cache = _attach.PATHS_CACHE
    saved = open(cache).read() if os.path.exists(cache) else None
    try:
        if saved is not None:
            os.unlink(cache)
        chain(lab, 'ingress', 'tc', [probe('a')])
        kept = json.loads(open(cache).read())
        assert kept['boot_id'] == open('/proc/sys/kernel/random/boot_id').read().strip()
        assert kept['have'] == {'xdp-netlink': True, 'xdp-link': True, 'tc-cls_bpf': True, 'tcx': True}, kept
        assert oct(os.stat(cache).st_mode & 0o777) == '0o600'
        chain(lab, 'ingress', 'tc', [])

        # the record is what the next new chain goes by: one that says "no TCX" gets cls_bpf
        with open(cache, 'w') as f:
            json.dump(dict(kept, have=dict(kept['have'], tcx=False)), f)
        assert chain(lab, 'ingress', 'tc', [probe('a')])['chain']['attach']['attach_path'] == 'tc-cls_bpf'
        chain(lab, 'ingress', 'tc', [])

        # another boot's record, or a damaged one, is tried again and replaced
        for bad in (json.dumps(dict(kept, boot_id='0' * 36, have=dict(kept['have'], tcx=False))), '{not json',
                    json.dumps(dict(kept, have={'tcx': 'yes'}))):
            with open(cache, 'w') as f:
                f.write(bad)
            assert chain(lab, 'ingress', 'tc', [probe('a')])['chain']['attach']['attach_path'] == 'tcx'
            assert json.loads(open(cache).read())['have'] == kept['have']
            chain(lab, 'ingress', 'tc', [])
    finally:
        if saved is not None:
            with open(cache, 'w') as f:
                f.write(saved)
