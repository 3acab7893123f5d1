# -*- coding: utf-8 -*-
"""The head attachment paths (plugins/module_utils/_attach.py) on the real kernel, with real traffic:
XDP by netlink and by bpf_link, TC by cls_bpf and by TCX. Programs are tiny hand-assembled counters
(tinybpf.py) so that what each program saw is exact."""

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from lab import REPO, sh

sys.path.insert(0, os.path.join(REPO, '.cache', 'collections'))
from ansible_collections.netprobe.ebpf.plugins.module_utils import _attach, _bpf, _netlink  # noqa: E402
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError  # noqa: E402

import tinybpf  # noqa: E402

SO_RCVBUFFORCE = 33
XDP_PATHS = (_attach.XDP_NETLINK, _attach.XDP_LINK)
TC_PATHS = (_attach.TC_CLS_BPF, _attach.TCX)


class Hook:
    """Target + opened programs of one test; close() detaches and releases everything."""

    def __init__(self, lab, hook='ingress', ns=None, ifname=None, position=None):
        self.lab = lab
        self.netns = _netlink.Netns(ns or lab.ns_b)
        self.ipr = self.netns.iproute()
        self.ifname = ifname or lab.if_b
        self.ifindex = _netlink.link_index(self.ipr, self.ifname, self.netns)
        self.pin_dir = '/sys/fs/bpf/netprobe/%d/%s/attach-test-%s' % (self.netns.inode, self.ifname, hook)
        self.hook = hook
        self.position = position
        self.programs = []
        self.attachments = []
        self.links = []

    def target(self, path, position=None):
        return _attach.Target(self.netns, self.ipr, self.ifindex, self.ifname, self.hook,
                              os.path.join(self.pin_dir, path.replace('-', '_') + '_link'),
                              position=position or _attach.Position(),
                              filter_name='np-test', own_name='tiny_count',
                              clsact_marker='/run/netprobe/clsact/%d/%s' % (self.netns.inode, self.ifname))

    def make(self, path, position=None):
        a = _attach.make(path, self.target(path, position))
        self.attachments.append(a)
        return a

    def prog(self, tiny):
        self.programs.append(tiny)
        return tiny

    def foreign_tcx(self, tiny, flags=0, relative=0):
        """Attach a program the way another tool would: its own TCX link, held by this test's fd."""
        with _netlink.in_netns(self.netns):
            fd = _bpf.link_create(tiny.fd, self.ifindex, _attach._TCX_ATTACH[self.hook], flags, relative)
        self.links.append(fd)
        return fd

    def close(self):
        for a in self.attachments:
            try:
                a.detach()
            except Exception:  # the namespace goes anyway; nothing may leak into the next test
                pass
        for fd in self.links:
            os.close(fd)
        for p in self.programs:
            p.close()
        self.ipr.close()


@pytest.fixture
def hook(lab):
    h = Hook(lab)
    try:
        yield h
    finally:
        h.close()


def udp(lab, count, port=9100):
    lab.send_udp(count, port)


class Flood:
    """UDP datagrams from A to B as fast as one thread sends them, until stop(); returns how many."""

    def __init__(self, lab, port=9200):
        self.sock = lab.open_socket(lab.ns_a)
        self.dst = (lab.ip_b, port)
        self.sent = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while self.running:
            for _burst in range(64):
                self.sock.sendto(b'f' * 32, self.dst)
                self.sent += 1
            time.sleep(0.0005)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        time.sleep(0.1)  # in flight through the veth


def test_every_path_attaches_replaces_detaches_with_traffic(hook):
    """Each path: attach, 20 packets counted by the head, atomic replace, 10 by the new head, detach."""
    for path, ptype, verdict in ((_attach.XDP_LINK, tinybpf.XDP, tinybpf.XDP_PASS),
                                 (_attach.XDP_NETLINK, tinybpf.XDP, tinybpf.XDP_PASS),
                                 (_attach.TCX, tinybpf.SCHED_CLS, tinybpf.TCX_NEXT),
                                 (_attach.TC_CLS_BPF, tinybpf.SCHED_CLS, tinybpf.TCX_NEXT)):
        a = hook.make(path)
        one, two = hook.prog(tinybpf.counter(ptype, verdict)), hook.prog(tinybpf.counter(ptype, verdict))
        a.attach(one.fd)
        state = a.query()
        assert state.attached and state.prog_id == one.id and state.path == path, state
        assert state.link_pinned == a.uses_link and bool(state.link_id) == a.uses_link
        udp(hook.lab, 20)
        a.replace(two.fd, one.fd)
        assert a.query().prog_id == two.id
        udp(hook.lab, 10)
        time.sleep(0.05)
        assert (one.hits(), two.hits()) == (20, 10), path
        a.detach()
        state = a.query()
        assert not state.attached and not state.link_pinned, state
        udp(hook.lab, 5)
        assert (one.hits(), two.hits()) == (20, 10), '%s: a detached head still runs' % path


def test_replace_refuses_a_wrong_expected_program(hook):
    for path, ptype, verdict in ((_attach.XDP_LINK, tinybpf.XDP, tinybpf.XDP_PASS),
                                 (_attach.TCX, tinybpf.SCHED_CLS, tinybpf.TCX_NEXT)):
        a = hook.make(path)
        one, two, other = (hook.prog(tinybpf.counter(ptype, verdict)) for _n in range(3))
        a.attach(one.fd)
        with pytest.raises(NetprobeError, match='changed under us'):
            a.replace(two.fd, other.fd)
        assert a.query().prog_id == one.id
        a.detach()


def test_xdpgeneric_off_cannot_remove_a_linked_head(hook):
    """`ip link set dev X xdpgeneric off` against an XDP bpf_link fails, and the link keeps running."""
    a = hook.make(_attach.XDP_LINK)
    prog = hook.prog(tinybpf.counter(tinybpf.XDP, tinybpf.XDP_PASS))
    a.attach(prog.fd)
    for cmd in (('xdpgeneric', 'off'), ('xdp', 'off')):
        res = sh('ip', '-n', hook.lab.ns_b, 'link', 'set', 'dev', hook.ifname, *cmd, check=False)
        if cmd[0] == 'xdpgeneric':
            assert res.returncode != 0 and 'link' in res.stderr.lower(), res
    state = a.query()
    assert state.attached and state.prog_id == prog.id and not state.link_detached, state
    udp(hook.lab, 25)
    time.sleep(0.05)
    assert prog.hits() == 25
    # whereas the netlink path is removed by the same command: drift the chain must see
    a.detach()
    n = hook.make(_attach.XDP_NETLINK)
    n.attach(prog.fd)
    sh('ip', '-n', hook.lab.ns_b, 'link', 'set', 'dev', hook.ifname, 'xdpgeneric', 'off')
    assert not n.query().attached


def test_detached_link_is_reported(hook):
    """A link detached behind our back (LINK_DETACH by another tool) shows as link_detached."""
    for path, ptype, verdict in ((_attach.XDP_LINK, tinybpf.XDP, tinybpf.XDP_PASS),
                                 (_attach.TCX, tinybpf.SCHED_CLS, tinybpf.TCX_NEXT)):
        a = hook.make(path)
        prog = hook.prog(tinybpf.counter(ptype, verdict))
        a.attach(prog.fd)
        fd = _bpf.obj_get(a.t.link_pin)
        _bpf.link_detach(fd)
        os.close(fd)
        state = a.query()
        assert state.link_pinned and state.link_detached and not state.attached, state
        a.attach(prog.fd)  # repair: a new link replaces the defunct pin
        state = a.query()
        assert state.attached and not state.link_detached
        udp(hook.lab, 7)
        time.sleep(0.05)
        assert prog.hits() == 7
        a.detach()


@pytest.mark.parametrize('position, ours_first', [
    ('first', True), ('last', False), ({'before': 'foreign'}, True), ({'after': 'foreign'}, False),
    ({'before': 'ID'}, True), ({'after': 'ID'}, False)])
def test_tcx_declared_place_beside_a_foreign_program(hook, position, ours_first):
    """A foreign TCX program attached by the test keeps its place and sees every packet, in the
    declared order relative to our head, also across a head replace."""
    foreign = hook.prog(tinybpf.marker(0x0 if not ours_first else 0x4E01, 0xF0F0, name='foreign'))
    hook.foreign_tcx(foreign)
    if isinstance(position, dict):
        (where, ref), = position.items()
        position = {where: foreign.id if ref == 'ID' else ref}
    pos = _attach.Position.parse(position)
    ours = hook.prog(tinybpf.marker(0xF0F0 if not ours_first else 0x0, 0x4E01, name='ours'))
    a = hook.make(_attach.TCX, pos)
    a.attach(ours.fd)
    state = a.query()
    assert state.position == (0 if ours_first else 1), state
    assert [(p.prog_id, p.name, p.kind) for p in state.foreign] == [(foreign.id, 'foreign', 'tcx')]
    assert state.foreign[0].link_id and state.foreign[0].position == (1 if ours_first else 0)
    udp(hook.lab, 30)
    # head replace: same place
    ours2 = hook.prog(tinybpf.marker(0xF0F0 if not ours_first else 0x0, 0x4E01, name='ours'))
    a.replace(ours2.fd, ours.fd)
    assert a.query().position == (0 if ours_first else 1)
    udp(hook.lab, 20)
    time.sleep(0.05)
    # hits[0]: packets that came in the declared order; hits[1]: any other order
    assert (ours.hits(0) + ours2.hits(0), ours.hits(1) + ours2.hits(1)) == (50, 0)
    assert (foreign.hits(0), foreign.hits(1)) == (50, 0)
    a.detach()
    assert [p.prog_id for p in _attach.tcx_programs(a.t)] == [foreign.id], 'the foreign program must stay'


def test_tcx_position_errors_name_what_is_there(hook):
    foreign = hook.prog(tinybpf.counter(tinybpf.SCHED_CLS, tinybpf.TCX_NEXT, name='other_tool'))
    hook.foreign_tcx(foreign)
    a = hook.make(_attach.TCX, _attach.Position.parse({'before': 'missing'}))
    ours = hook.prog(tinybpf.counter(tinybpf.SCHED_CLS, tinybpf.TCX_NEXT))
    with pytest.raises(NetprobeError, match=r'no such program.*other_tool \(id %d\)' % foreign.id):
        a.attach(ours.fd)
    with pytest.raises(NetprobeError, match='invalid tc_position'):
        _attach.Position.parse({'between': 1})


def test_foreign_programs_are_listed_never_touched(hook):
    """A foreign cls_bpf filter and a foreign TCX program show in query() of both TC paths; a foreign
    XDP program (and a libxdp dispatcher, by name) makes XDP attach fail with a message naming it."""
    ftcx = hook.prog(tinybpf.counter(tinybpf.SCHED_CLS, tinybpf.TCX_NEXT, name='cilium_like'))
    hook.foreign_tcx(ftcx)
    fcls = hook.prog(tinybpf.counter(tinybpf.SCHED_CLS, tinybpf.TCX_NEXT, name='foreign_cls'))
    hook.ipr.tc('add', 'clsact', hook.ifindex)
    hook.ipr.tc('add-filter', 'bpf', hook.ifindex, 7, fd=fcls.fd, name='foreign_cls',
                parent=_netlink.TC_PARENTS['ingress'], prio=10, protocol=_netlink.ETH_P_ALL, direct_action=True)
    for path in TC_PATHS:
        a = hook.make(path)
        ours = hook.prog(tinybpf.counter(tinybpf.SCHED_CLS, tinybpf.TCX_NEXT, name='ours'))
        a.attach(ours.fd)
        state = a.query()
        found = sorted((p.kind, p.prog_id, p.name) for p in state.foreign)
        assert found == sorted([('tcx', ftcx.id, 'cilium_like'), ('cls_bpf', fcls.id, 'foreign_cls')]), (path, state)
        udp(hook.lab, 10)
        a.detach()
    time.sleep(0.05)
    assert ftcx.hits() == 20 and fcls.hits() == 20 and [p.prog_id for p in _attach.tcx_programs(a.t)] == [ftcx.id]

    for name, expect in (('some_xdp', r"XDP program 'some_xdp' \(id %d\) that netprobe did not attach"),
                         ('xdp_dispatcher', r'libxdp multi-program dispatcher \(xdp_dispatcher, id %d\)')):
        fxdp = hook.prog(tinybpf.counter(tinybpf.XDP, tinybpf.XDP_PASS, name=name))
        _netlink.xdp_attach(hook.ipr, hook.ifindex, fxdp.fd, 'skb')
        for path in XDP_PATHS:
            a = hook.make(path)
            ours = hook.prog(tinybpf.counter(tinybpf.XDP, tinybpf.XDP_PASS))
            with pytest.raises(NetprobeError, match=expect % fxdp.id) as err:
                a.attach(ours.fd)
            assert err.value.details['foreign'][0]['prog_id'] == fxdp.id
            a.detach()  # not ours: left alone
            assert _netlink.xdp_query(hook.ipr, hook.ifindex)[0] == fxdp.id
        _netlink.xdp_detach(hook.ipr, hook.ifindex, 'skb', fxdp.fd)


@pytest.mark.parametrize('path', [_attach.XDP_LINK, _attach.XDP_NETLINK, _attach.TCX, _attach.TC_CLS_BPF])
def test_replace_under_flood_loses_nothing(hook, path):
    """60 head swaps during a flood: every packet that reached the hook was counted by exactly one head."""
    ptype, verdict = ((tinybpf.XDP, tinybpf.XDP_PASS) if path.startswith('xdp')
                      else (tinybpf.SCHED_CLS, tinybpf.TCX_NEXT))
    heads = [hook.prog(tinybpf.counter(ptype, verdict)) for _n in range(2)]
    a = hook.make(path)
    a.attach(heads[0].fd)
    # the receiving socket counts too (a big buffer: the flood must not overflow it)
    rx = hook.lab.open_socket(hook.lab.ns_b)
    rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    rx.bind(('0.0.0.0', 9200))
    with Flood(hook.lab) as flood:
        for swap in range(60):
            new, old = heads[(swap + 1) % 2], heads[swap % 2]
            a.replace(new.fd, old.fd)
            time.sleep(0.01)
    counted = sum(h.hits() for h in heads)
    rx.setblocking(False)
    received = 0
    while True:
        try:
            rx.recv(64)
            received += 1
        except BlockingIOError:
            break
    assert flood.sent > 2000, 'the flood was too thin to mean anything'
    assert counted == flood.sent, '%s: %d sent, %d counted by the heads' % (path, flood.sent, counted)
    assert received == flood.sent, '%s: %d sent, %d received' % (path, flood.sent, received)


def test_migration_cls_bpf_to_tcx_and_back_under_flood(hook):
    """New attachment first, then the old one removed: TCX (runs first) marks what it saw, cls_bpf
    (runs after it on the same hook) counts packets TCX did not see. Both ways, under a flood:
    every packet judged at least once (twice during the overlap), none zero times."""
    rx = hook.lab.open_socket(hook.lab.ns_b)
    rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    rx.bind(('0.0.0.0', 9200))
    tcx_prog = hook.prog(tinybpf.marker(0, 0x7C, name='head_tcx'))
    cls_prog = hook.prog(tinybpf.marker(0x7C, 0x7C, name='head_cls'))  # hits[0]: TCX saw it too
    cls = hook.make(_attach.TC_CLS_BPF)
    tcx = hook.make(_attach.TCX, _attach.Position('first'))
    cls.attach(cls_prog.fd)
    with Flood(hook.lab) as flood:
        for _round in range(5):
            tcx.attach(tcx_prog.fd)
            time.sleep(0.02)
            cls.detach()
            time.sleep(0.02)
            cls.attach(cls_prog.fd)
            time.sleep(0.02)
            tcx.detach()
            time.sleep(0.02)
    tcx_seen = tcx_prog.hits(0) + tcx_prog.hits(1)
    cls_only = cls_prog.hits(1)
    assert flood.sent > 1000
    assert tcx_seen + cls_only == flood.sent, (flood.sent, tcx_seen, cls_only, cls_prog.hits(0))
    assert cls_prog.hits(0) > 0, 'the overlap (judged twice) should have been hit at least once'


def chain_head(hook, mode, requested, position=None):
    return _attach.ChainHead(hook.netns, hook.ifname, mode, hook.hook, hook.pin_dir, requested=requested,
                             position=position, own_name='tiny_count',
                             clsact_marker='/run/netprobe/clsact/%d/%s' % (hook.netns.inode, hook.ifname)
                             ).bind(hook.ipr, hook.ifindex)


def test_chain_head_migrates_tc_under_flood(hook):
    """The chain's view (ChainHead): cls_bpf -> TCX -> cls_bpf with the same head program, under a flood.
    The head counts a packet in hits[0] the first time it sees it (mark 0) and in hits[1] when it sees it
    again (its own mark on it): every packet is seen at least once; during the overlap some twice."""
    rx = hook.lab.open_socket(hook.lab.ns_b)
    rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    rx.bind(('0.0.0.0', 9200))
    head = hook.prog(tinybpf.marker(0, 0x7C, name='tiny_count'))
    ch = chain_head(hook, 'tc', 'cls_bpf')
    ch.observe()
    ch.set(head.fd)
    assert ch.in_use == _attach.TC_CLS_BPF and ch.prog_id == head.id
    with Flood(hook.lab) as flood:
        for requested, path in (('tcx', _attach.TCX), ('cls_bpf', _attach.TC_CLS_BPF)) * 3:
            ch.requested = requested
            ch.observe()
            assert ch.drift and 'migrated' in ch.drift[0]
            ch.set(head.fd)
            assert ch.in_use == path and ch.prog_id == head.id and not ch.drift
            time.sleep(0.03)
    assert flood.sent > 1000
    assert head.hits(0) == flood.sent, (flood.sent, head.hits(0), head.hits(1))
    assert head.hits(1) > 0, 'no packet met both attachments: the overlap did not happen'
    ch.set(None)
    ch.observe()
    assert ch.in_use is None and not os.path.exists(ch.link_pin)


def test_chain_head_reports_and_repairs_a_detached_link(hook):
    for mode, ptype, verdict in (('xdp', tinybpf.XDP, tinybpf.XDP_PASS), ('tc', tinybpf.SCHED_CLS, tinybpf.TCX_NEXT)):
        head = hook.prog(tinybpf.counter(ptype, verdict))
        ch = chain_head(hook, mode, 'auto')
        ch.observe()
        ch.set(head.fd)
        assert ch.in_use == (_attach.XDP_LINK if mode == 'xdp' else _attach.TCX)
        fd = _bpf.obj_get(ch.link_pin)
        _bpf.link_detach(fd)  # another tool (or bpftool link detach)
        os.close(fd)
        ch.observe()
        assert ch.prog_id == 0 and ch.in_use is None and 'was detached' in ch.drift[0], ch.drift
        ch.set(head.fd)
        assert ch.in_use and ch.prog_id == head.id and not ch.drift
        udp(hook.lab, 9)
        time.sleep(0.05)
        assert head.hits() == 9
        facts = ch.describe()
        assert facts['attach_path'] == ch.in_use and facts['head_link_id']
        ch.set(None)


def test_chain_head_xdp_netlink_to_link_and_back(hook):
    head = hook.prog(tinybpf.counter(tinybpf.XDP, tinybpf.XDP_PASS))
    ch = chain_head(hook, 'xdp', 'netlink')
    ch.observe()
    ch.set(head.fd)
    assert ch.in_use == _attach.XDP_NETLINK
    for requested, path in (('link', _attach.XDP_LINK), ('netlink', _attach.XDP_NETLINK)):
        ch.requested = requested
        ch.observe()
        ch.set(head.fd)
        assert ch.in_use == path and ch.prog_id == head.id
    sh('ip', '-n', hook.lab.ns_b, 'link', 'set', 'dev', hook.ifname, 'xdpgeneric', 'off')
    ch.observe()
    assert ch.in_use is None  # netlink: the stray command removed it; the chain reports "head detached"
    ch.set(None)


READER = r'''
import json, sys
sys.path.insert(0, sys.argv[3])
sys.path.insert(0, sys.argv[4])
from ansible_collections.netprobe.ebpf.plugins.module_utils import _netlink
import tinybpf
netns = _netlink.Netns(sys.argv[1])
out = {}
with netns.iproute() as ipr:
    ifindex = _netlink.link_index(ipr, sys.argv[2], netns)
    out['empty'] = [_netlink.xdp_query(ipr, ifindex), _netlink.has_clsact(ipr, ifindex),
                    _netlink.tc_filters(ipr, ifindex, 'ingress'), ipr.link_lookup('no-such-if'),
                    ipr.link_lookup('x' * 40), sorted(link.name for link in ipr.get_links())]
    out['pyroute2_after_reads'] = 'pyroute2' in sys.modules
    xdp = tinybpf.counter(tinybpf.XDP, tinybpf.XDP_PASS, name='reader_xdp')
    cls = tinybpf.counter(tinybpf.SCHED_CLS, tinybpf.TCX_NEXT, name='reader_tc')
    _netlink.xdp_attach(ipr, ifindex, xdp.fd, 'skb')
    _netlink.tc_attach(ipr, ifindex, 'egress', cls.fd, 'reader-tc')
    out['pyroute2_after_writes'] = 'pyroute2' in sys.modules
    out['ids'] = [xdp.id, cls.id]
    out['attached'] = [_netlink.xdp_query(ipr, ifindex), _netlink.has_clsact(ipr, ifindex),
                       _netlink.tc_query(ipr, ifindex, 'egress'), _netlink.tc_filters(ipr, ifindex, 'egress')]
    try:
        _netlink.xdp_attach(ipr, ifindex, xdp.fd, 'skb')  # EBUSY from the kernel, through pyroute2
    except Exception as e:
        out['refused'] = [type(e).__name__, str(e)]
    print(json.dumps(out))
    sys.stdout.flush()
    sys.stdin.readline()  # the test compares with ip and tc meanwhile
    _netlink.xdp_detach(ipr, ifindex, 'skb', xdp.fd)
    _netlink.tc_detach(ipr, ifindex, 'egress', True)
    try:
        ipr.tc('del', 'clsact', ifindex)  # gone already: the kernel's errno in this layer's NetlinkError
    except _netlink.NetlinkError as e:
        gone = e.code
    print(json.dumps([_netlink.xdp_query(ipr, ifindex), _netlink.has_clsact(ipr, ifindex), gone]))
'''


def test_reads_need_no_pyroute2_and_agree_with_ip_and_tc(lab, tmp_path):
    """An unchanged run only reads: the reader answers without importing pyroute2 (about 100 ms of a run here,
    seconds in a TCG guest); the first write imports it. What the reader sees is what ip and tc see."""
    script = tmp_path / 'reader.py'
    script.write_text(READER)
    proc = subprocess.Popen([sys.executable, str(script), lab.ns_b, lab.if_b, os.path.join(REPO, '.cache', 'collections'),
                             os.path.dirname(os.path.abspath(__file__))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out = json.loads(proc.stdout.readline() or proc.stderr.read())
        xdp_id, tc_id = out['ids']
        assert out['empty'] == [[0, None], False, [], [], [], ['lo', lab.if_b]]
        assert out['pyroute2_after_reads'] is False and out['pyroute2_after_writes'] is True
        prio = _netlink.TC_PRIO
        assert out['attached'] == [[xdp_id, 'skb'], True, tc_id, [[prio, prio, tc_id, 'reader-tc']]]
        assert out['refused'] == ['NetprobeError', 'another XDP program is attached to this interface: netprobe does '
                                  'not replace programs it did not attach (detach it first)']
        link = json.loads(sh('ip', '-n', lab.ns_b, '-j', '-d', 'link', 'show', 'dev', lab.if_b).stdout)[0]
        assert link['xdp']['prog']['id'] == xdp_id and link['xdp']['mode'] == 2
        filters = json.loads(sh('tc', '-n', lab.ns_b, '-j', 'filter', 'show', 'dev', lab.if_b, 'egress').stdout)
        assert [(f['pref'], f['options'].get('prog', {}).get('id')) for f in filters if 'options' in f] == [(prio, tc_id)]
        rest, _err = proc.communicate('\n', timeout=30)
        assert json.loads(rest) == [[0, None], False, errno.EINVAL] and proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
