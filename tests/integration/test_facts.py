"""ebpf_facts and ebpf_metrics_info on the real kernel, with real traffic (issue 3)."""

import importlib.util
import json
import os
import platform
import socket
import threading
import time

import pytest

from lab import PIN_ROOT, RUN_ROOT, run_module, run_playbook, sh

PORT = 40000

# One probe exercising every decoder path: struct keys with IPv4/IPv6 addresses and a char array,
# array / hash / per-CPU hash / LPM trie maps, a sorted map, and a private (not exported) map.
DECODE_PROBE = r'''
#include "netprobe.h"

struct flow4 { __u32 saddr; __u32 daddr; __u16 dport; __u8 proto; __u8 pad; };
struct flow6 { __u8 saddr[16]; __u8 daddr[16]; };
struct totals { __u64 packets; __u64 bytes; char label[8]; };
struct lpm4 { __u32 prefixlen; __u32 addr; };
struct talker { __u64 packets; __u64 bytes; };

BPF_ARRAY(summary, struct totals, 2);
BPF_HASH(flows4, struct flow4, __u64, 64);
BPF_PERCPU_HASH(flows6, struct flow6, struct talker, 64);
BPF_LPM_TRIE(sources, struct lpm4, __u64, 64);
BPF_HASH(talkers, __u16, struct talker, 64);
BPF_ARRAY(private_state, __u64, 1);
NP_METRIC(summary, NP_EXPORT);
NP_METRIC(flows4, NP_EXPORT);
NP_METRIC(flows6, NP_EXPORT);
NP_METRIC(sources, NP_EXPORT);
NP_METRIC(talkers, NP_EXPORT | NP_SORTED);

NP_PROBE(ctx)
{
    struct np_packet pkt;
    int idx = 0;
    __u64 *n;
    if (np_parse(ctx, &pkt) < 0 || !pkt.udp)
        return NP_PASS;
    idx = pkt.ip6 ? 1 : 0;
    struct totals *t = summary.lookup(&idx);
    if (t) {
        __sync_fetch_and_add(&t->packets, 1);
        __sync_fetch_and_add(&t->bytes, pkt.len);
        t->label[0] = 'v'; t->label[1] = pkt.ip6 ? '6' : '4';
    }
    if (pkt.ip4) {
        struct flow4 f = {};
        f.saddr = pkt.ip4->saddr;
        f.daddr = pkt.ip4->daddr;
        f.dport = pkt.dport;
        f.proto = pkt.l4_proto;
        __u64 zero = 0;
        n = flows4.lookup_or_try_init(&f, &zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        struct lpm4 k = {32, pkt.ip4->saddr};
        n = sources.lookup_or_try_init(&k, &zero);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
    if (pkt.ip6) {
        struct flow6 f = {};
        __builtin_memcpy(f.saddr, &pkt.ip6->saddr, 16);
        __builtin_memcpy(f.daddr, &pkt.ip6->daddr, 16);
        struct talker zero = {};
        struct talker *v = flows6.lookup_or_try_init(&f, &zero);
        if (v) { v->packets += 1; v->bytes += pkt.len; }
    }
    __u16 sport = pkt.sport;
    struct talker z = {};
    struct talker *tk = talkers.lookup_or_try_init(&sport, &z);
    if (tk) { __sync_fetch_and_add(&tk->packets, 1); __sync_fetch_and_add(&tk->bytes, pkt.len); }
    return NP_PASS;
}
'''

# UDP to PORT, counted per CPU; reset-after-read (empty) or read through the twin (swap).
COUNT_PROBE = r'''
#include "netprobe.h"
BPF_PERCPU_ARRAY(seen, __u64, 1);
BPF_HASH(by_port, __u16, __u64, 16);
NP_METRIC(seen, NP_EXPORT | FEATURES);
NP_METRIC(by_port, NP_EXPORT | FEATURES);
NP_PROBE(ctx)
{
    struct np_packet pkt;
    __u64 zero = 0, *n;
    np_parse(ctx, &pkt);
    if (!pkt.udp || pkt.dport != %d)
        return NP_PASS;
    int zero_index = 0;
    n = seen.lookup(&zero_index);
    if (n)
        __sync_fetch_and_add(n, 1);
    __u16 port = pkt.dport;
    n = by_port.lookup_or_try_init(&port, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return NP_PASS;
}
''' % PORT


def where(lab, mode='xdp', hook='ingress'):
    return {'interface': lab.if_b, 'netns': lab.ns_b, 'mode': mode, 'hook': hook}


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


def add_probe(lab, name, mode='xdp', hook='ingress', **code):
    return ok(run_module('ebpf_probe', dict(where(lab, mode, hook), name=name, **code)))


def facts(lab, check=False, **args):
    args.setdefault('netns', [lab.ns_b])
    return ok(run_module('ebpf_facts', args, check=check))['ansible_facts']['netprobe']


def metrics_info(lab, **args):
    args.setdefault('netns', [lab.ns_b])
    return ok(run_module('ebpf_metrics_info', args))


def metric(metrics, probe, name):
    return next(m for m in metrics if m['probe'] == probe and m['map'] == name)


def seen(metrics, probe):
    """Packets counted by a COUNT_PROBE (per-CPU array, summed over CPUs)."""
    return metric(metrics, probe, 'seen')['entries'][0]['value']


def snapshot(lab):
    """What a read-only module must leave as it was: pins, metadata, map contents, attachments."""
    ino = str(lab.netns_inode(lab.ns_b))
    pins, maps = [], {}
    for dirpath, _dirs, files in os.walk(os.path.join(PIN_ROOT, ino)):
        for f in files:
            path = os.path.join(dirpath, f)
            pins.append(path)
            if '/maps/' in path:
                maps[path] = sh('bpftool', '-j', 'map', 'dump', 'pinned', path).stdout
    states = {}
    for dirpath, _dirs, files in os.walk(os.path.join(RUN_ROOT, 'chains', ino)):
        for f in files:
            with open(os.path.join(dirpath, f)) as fh:
                states[f] = fh.read()
    links = sh('ip', '-n', lab.ns_b, '-d', '-j', 'link', 'show', lab.if_b).stdout
    filters = sh('tc', '-n', lab.ns_b, 'filter', 'show', 'dev', lab.if_b, 'ingress', check=False).stdout
    return sorted(pins), maps, states, links, filters


def test_counter_shows_exactly_n_and_facts_change_nothing(lab):
    add_probe(lab, 'count', probe='counter')
    rx = lab.receiver(PORT)
    lab.send_udp(137, PORT)
    assert rx.count() == 137
    before = snapshot(lab)
    for check in (True, False):
        got = facts(lab, check=check, gather_subset=['all', '!capabilities'])
        entries = metric(got['metrics'], 'count', 'by_proto')['entries']
        udp = [e for e in entries if e['key'] == {'l3_proto': 0x0800, 'l4_proto': 17}]  # __pad left out
        assert udp and udp[0]['value']['packets'] == 137
        assert udp[0]['value']['bytes'] == 137 * (14 + 20 + 8 + 32)
        [chain] = got['chains']
        assert chain['attached'] and chain['drift'] == [] and chain['mode'] == 'xdp'
        [probe] = chain['probes']
        assert probe['name'] == 'count' and probe['metrics'] == {'by_proto': ['export', 'counter']}
        xdp = json.loads(before[3])[0]['xdp']['prog']
        assert probe['prog_id'] == xdp['id'] == chain['head_prog_id'] and probe['tag'] == xdp['tag']
        assert 'capabilities' not in got
    assert snapshot(lab) == before


def test_per_cpu_breakdown_and_subsets(lab):
    add_probe(lab, 'count', probe='counter')
    lab.send_udp(40, PORT)
    got = facts(lab, gather_subset=['metrics'], per_cpu=True)
    assert set(got) == {'metrics'}
    [udp] = [e for e in metric(got['metrics'], 'count', 'by_proto')['entries'] if e['key']['l4_proto'] == 17]
    assert len(udp['per_cpu']) == os.cpu_count()
    assert sum(c['packets'] for c in udp['per_cpu']) == udp['value']['packets'] == 40
    assert facts(lab, gather_subset=['metrics'], probes=['nothing'])['metrics'] == []
    assert facts(lab, gather_subset=['chains'], interfaces=['nope'])['chains'] == []


def test_decoding_of_array_hash_percpu_lpm_and_sorted_maps(lab6):
    lab = lab6
    add_probe(lab, 'decode', source=DECODE_PROBE)
    lab.send_udp(30, PORT, sport=5001)
    lab.send_udp(12, PORT, sport=5002)
    lab.send_udp(7, PORT + 1, family=socket.AF_INET6, sport=5003)
    got = facts(lab, gather_subset=['metrics'], top=2)['metrics']
    names = sorted(m['map'] for m in got)
    assert names == ['flows4', 'flows6', 'sources', 'summary', 'talkers']  # private_state stays private

    summary = metric(got, 'decode', 'summary')
    assert summary['type'] == 'array' and [e['key'] for e in summary['entries']] == [0, 1]
    v4, v6 = summary['entries'][0]['value'], summary['entries'][1]['value']
    assert v4['packets'] == 42 and v4['label'] == 'v4' and v4['bytes'] == 42 * 74
    assert v6['packets'] == 7 and v6['label'] == 'v6'

    flows4 = metric(got, 'decode', 'flows4')
    assert flows4['type'] == 'hash'
    assert {(e['key']['saddr'], e['key']['daddr'], e['key']['proto']): e['value'] for e in flows4['entries']} == {
        (lab.ip_a, lab.ip_b, 17): 42}
    assert flows4['entries'][0]['key']['dport'] == PORT

    flows6 = metric(got, 'decode', 'flows6')
    assert flows6['type'] == 'percpu_hash'
    assert [(e['key'], e['value']['packets']) for e in flows6['entries']] == [
        ({'saddr': lab.ip6_a, 'daddr': lab.ip6_b}, 7)]

    sources = metric(got, 'decode', 'sources')
    assert sources['type'] == 'lpm_trie' and sources['method'] == 'iterate'
    assert [(e['key']['prefix'], e['value']) for e in sources['entries']] == [('%s/32' % lab.ip_a, 42)]

    talkers = metric(got, 'decode', 'talkers')
    assert talkers['count'] == 3 and talkers['sorted_by'] == 'packets'
    assert [(e['key'], e['value']['packets']) for e in talkers['entries']] == [(5001, 30), (5002, 12)]
    by_bytes = facts(lab, gather_subset=['metrics'], top=1, sort_by='bytes', probes=['decode'])['metrics']
    assert [e['key'] for e in metric(by_bytes, 'decode', 'talkers')['entries']] == [5001]


def test_empty_resets_after_each_consuming_read_only(lab):
    add_probe(lab, 'empty', source=COUNT_PROBE.replace('FEATURES', 'NP_EMPTY'))
    lab.send_udp(30, PORT)
    first = metrics_info(lab, consume=True)
    assert first['changed'] and seen(first['metrics'], 'empty') == 30
    assert metric(first['metrics'], 'empty', 'by_port')['entries'] == [{'key': PORT, 'value': 30}]
    assert all(m['read'] == 'reset' for m in first['metrics'])
    lab.send_udp(20, PORT)
    # peeks (facts, metrics_info without consume, consume in check mode) change nothing
    assert seen(facts(lab, gather_subset=['metrics'])['metrics'], 'empty') == 20
    peek = metrics_info(lab)
    assert not peek['changed'] and seen(peek['metrics'], 'empty') == 20
    checked = ok(run_module('ebpf_metrics_info', {'netns': [lab.ns_b], 'consume': True}, check=True))
    assert checked['changed'] and seen(checked['metrics'], 'empty') == 20
    second = metrics_info(lab, consume=True)
    assert seen(second['metrics'], 'empty') == 20
    assert metric(second['metrics'], 'empty', 'by_port')['entries'] == [{'key': PORT, 'value': 20}]
    third = metrics_info(lab, consume=True)
    assert seen(third['metrics'], 'empty') == 0 and metric(third['metrics'], 'empty', 'by_port')['entries'] == []


class Traffic(threading.Thread):
    """UDP to PORT from A to B, steadily, until stopped; counts what was sent."""

    def __init__(self, lab):
        super(Traffic, self).__init__(daemon=True)
        self.sock = lab.open_socket(lab.ns_a)
        self.dst = (lab.ip_b, PORT)
        self.sent = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for _packet in range(20):
                self.sock.sendto(b'x' * 32, self.dst)
                self.sent += 1
            time.sleep(0.005)

    def stop(self):
        self.halt.set()
        self.join()
        time.sleep(0.2)  # the last packets reach the hook
        return self.sent


def active_copy(lab, probe, mode, hook):
    [chain] = [c for c in facts(lab, gather_subset=['chains'])['chains'] if (c['mode'], c['hook']) == (mode, hook)]
    assert chain['drift'] == [] and chain['attached']
    p = next(p for p in chain['probes'] if p['name'] == probe)
    return p['swap']['active_copy'], p['prog_id']


@pytest.mark.parametrize('mode,hook', [('xdp', 'ingress'), ('tc', 'ingress')])
def test_swap_reads_add_up_under_traffic_across_chain_edits(lab, mode, hook):
    swap = COUNT_PROBE.replace('FEATURES', 'NP_SWAP')
    add_probe(lab, 'front', mode, hook, probe='counter')
    add_probe(lab, 'swapped', mode, hook, source=swap)
    first = active_copy(lab, 'swapped', mode, hook)
    assert first[0] == 'primary'
    copies = []
    traffic = Traffic(lab)
    traffic.start()
    reads = []
    try:
        def swap_read():
            result = metrics_info(lab, consume=True, probes=['swapped'])
            assert all(m['read'] == 'swap' for m in result['metrics']), result.get('warnings')
            reads.append(seen(result['metrics'], 'swapped'))
            by_port = metric(result['metrics'], 'swapped', 'by_port')['entries']
            assert sum(e['value'] for e in by_port) == reads[-1]
            copies.append(metric(result['metrics'], 'swapped', 'seen')['copy_read'])
        time.sleep(0.3)
        swap_read()                                     # predecessor: front (progs[front.slot])
        ok(run_module('ebpf_probe', dict(where(lab, mode, hook), name='front', state='absent')))
        time.sleep(0.3)
        swap_read()                                     # now the head: the attachment is swapped
        assert active_copy(lab, 'swapped', mode, hook)[0] == 'primary'  # read from the kernel, not remembered
        add_probe(lab, 'new-front', mode, hook, probe='counter', position=0)
        time.sleep(0.3)
        swap_read()                                     # predecessor: new-front, another slot
        rerun = run_module('ebpf_probe', dict(where(lab, mode, hook), name='swapped', source=swap))
        assert not ok(rerun)['changed'] and rerun['drift'] == []  # the twin running is no drift
        time.sleep(0.3)
        swap_read()
    finally:
        total = traffic.stop()
    swap_read()                                         # what came after the last read
    assert seen(metrics_info(lab, consume=True, probes=['swapped'])['metrics'], 'swapped') == 0
    assert all(r > 0 for r in reads[:4])
    assert sum(reads) == total, (reads, total)
    assert copies == ['primary', 'twin', 'primary', 'twin', 'primary']
    last = active_copy(lab, 'swapped', mode, hook)
    assert last[0] == 'primary' and last[1] == first[1]


def test_facts_of_a_swap_probe_sum_both_copies_and_swap_nothing(lab):
    add_probe(lab, 'swapped', source=COUNT_PROBE.replace('FEATURES', 'NP_SWAP'))
    lab.send_udp(10, PORT)
    assert seen(metrics_info(lab, consume=True)['metrics'], 'swapped') == 10
    lab.send_udp(5, PORT)
    copy = active_copy(lab, 'swapped', 'xdp', 'ingress')
    assert seen(facts(lab, gather_subset=['metrics'])['metrics'], 'swapped') == 5
    assert seen(metrics_info(lab)['metrics'], 'swapped') == 5
    assert active_copy(lab, 'swapped', 'xdp', 'ingress') == copy


def test_capabilities_are_facts_of_this_kernel(lab):
    caps = facts(lab, check=True, gather_subset=['capabilities'])['capabilities']
    assert caps['kernel_release'] == platform.release()
    assert caps['btf'] == os.path.exists('/sys/kernel/btf/vmlinux')
    with open('/proc/mounts') as f:
        assert caps['bpffs_mounted'] == any(l.split()[1:3] == ['/sys/fs/bpf', 'bpf'] for l in f)
    assert caps['possible_cpus'] >= os.cpu_count()
    version = tuple(caps['kernel_version'][:2])
    assert caps['batch_map_ops'] == (version >= (5, 6))
    assert caps['ring_buffer'] == (version >= (5, 8))
    assert caps['tcx'] == (version >= (6, 6))
    assert caps['bcc']['available'] and caps['bcc']['version'] == __import__('bcc').__version__
    expected_headers = 'exact' if os.path.isdir('/lib/modules/%s/build' % platform.release()) else 'fallback'
    assert caps['kernel_headers']['kind'] == expected_headers
    assert caps['probe_errors'] == {}
    # what the capabilities promise works here, observed with our own attachments
    assert caps['xdp_native'] and caps['xdp_generic'] and caps['tc_clsact']
    ok(run_module('ebpf_probe', dict(where(lab), name='n', probe='counter', xdp_mode='native')))
    link = json.loads(sh('ip', '-n', lab.ns_b, '-d', '-j', 'link', 'show', lab.if_b).stdout)[0]
    assert link['xdp']['mode'] == 1  # XDP_ATTACHED_DRV
    ok(run_module('ebpf_probe', dict(where(lab, 'tc', 'ingress'), name='t', probe='counter', tc_attach='cls_bpf')))
    assert 'netprobe-t' in sh('tc', '-n', lab.ns_b, 'filter', 'show', 'dev', lab.if_b, 'ingress').stdout
    if caps.get('tcx'):
        tcx = ok(run_module('ebpf_probe', dict(where(lab, 'tc', 'egress'), name='x', probe='counter')))
        assert tcx['chain']['attach']['attach_path'] == 'tcx', tcx['chain']
    # the attach tests left nothing behind in the host namespace
    assert not [n for n in sh('ip', '-j', 'link').stdout.split('"ifname":')[1:] if n.startswith('"npcap')]


def test_prometheus_textfile_is_replaced_atomically(lab, tmp_path):
    add_probe(lab, 'count', probe='counter')
    lab.send_udp(25, PORT)
    path = str(tmp_path / 'netprobe.prom')
    result = metrics_info(lab, prometheus_textfile=path)
    assert result['changed'] and result['prometheus_textfile'] == path
    assert os.listdir(str(tmp_path)) == ['netprobe.prom']
    assert oct(os.stat(path).st_mode & 0o777) == '0o644'
    with open(path) as f:
        text = f.read()
    labels = ('netns="%s",interface="vb",hook="ingress",mode="xdp",probe="count",map="by_proto",'
              'key_l3_proto="2048",key_l4_proto="17"' % lab.ns_b)
    assert 'netprobe_by_proto_packets_total{%s} 25\n' % labels in text
    assert 'netprobe_chain_attached{netns="%s",interface="vb",hook="ingress",mode="xdp"} 1\n' % lab.ns_b in text
    assert '# TYPE netprobe_by_proto_packets_total counter\n' in text
    assert '# TYPE netprobe_chain_attached gauge\n' in text
    for line in text.splitlines():
        assert line.startswith('#') or line.rsplit(' ', 1)[1].lstrip('-').isdigit()
    # no traffic since: the same content, nothing written, not changed (check mode says the same)
    mtime = os.stat(path).st_mtime_ns
    assert not metrics_info(lab, prometheus_textfile=path)['changed']
    assert not ok(run_module('ebpf_metrics_info', {'netns': [lab.ns_b], 'prometheus_textfile': path}, check=True))['changed']
    assert os.stat(path).st_mtime_ns == mtime
    os.unlink(path)
    checked = ok(run_module('ebpf_metrics_info', {'netns': [lab.ns_b], 'prometheus_textfile': path}, check=True))
    assert checked['changed'] and not os.path.exists(path)


def _exposition_checker():
    """The strict parser of the text format that the unit tests use (prometheus_client is not in the venv)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'unit', 'plugins', 'module_utils',
                        'test_metrics_prometheus.py')
    spec = importlib.util.spec_from_file_location('np_exposition_checker', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def textfile_families(lab, path):
    ok(metrics_info(lab, prometheus_textfile=path))
    with open(path) as f:
        return _exposition_checker().parse_exposition(f.read())


def test_counter_family_counts_exactly_n_and_a_patch_keeps_every_series(lab, tmp_path):
    """Issue 22: the counter probe's packets are a counter family of their own; rebuilding the probe (a new program,
    a new prog_id and tag) changes no series' labels, and the counter carries on (the maps are kept)."""
    checker = _exposition_checker()
    first = add_probe(lab, 'count', probe='counter')
    rx = lab.receiver(PORT)
    lab.send_udp(37, PORT)
    assert rx.count() == 37
    path = str(tmp_path / 'netprobe.prom')
    before = textfile_families(lab, path)
    udp = {'netns': lab.ns_b, 'interface': lab.if_b, 'hook': 'ingress', 'mode': 'xdp', 'probe': 'count',
           'map': 'by_proto', 'key_l3_proto': '2048', 'key_l4_proto': '17'}
    packets = before['netprobe_by_proto_packets_total']
    assert packets['type'] == 'counter' and packets['samples'] == [(udp, 37)]
    assert before['netprobe_by_proto_bytes_total']['type'] == 'counter'
    assert before['netprobe_by_proto_bytes_total']['samples'] == [(udp, 37 * (14 + 20 + 8 + 32))]
    assert 'netprobe_map_value' not in before  # the counter probe has no gauge field
    assert all(f['type'] == 'gauge' for n, f in before.items() if not n.endswith('_total'))
    chain = {'netns': lab.ns_b, 'interface': lab.if_b, 'hook': 'ingress', 'mode': 'xdp'}
    assert before['netprobe_probe_info']['samples'] == [(dict(chain, probe='count'), 1)]

    patched = add_probe(lab, 'count', probe='counter', cflags=['-DNETPROBE_PATCHED=1'])
    assert patched['changed'] and patched['probe']['build'] in ('bcc', 'cached'), patched['probe']
    assert patched['probe']['prog_id'] != first['probe']['prog_id']
    lab.send_udp(5, PORT)
    assert rx.count() == 42  # received in all
    after = textfile_families(lab, path)
    assert checker.label_sets(after) == checker.label_sets(before)
    assert after['netprobe_by_proto_packets_total']['samples'] == [(udp, 42)]
    assert after['netprobe_by_proto_packets_total']['type'] == 'counter'
    [chain_facts] = facts(lab, gather_subset=['chains'])['chains']
    assert chain_facts['probes'][0]['prog_id'] == patched['probe']['prog_id']  # the ids stay in the facts


def test_a_counter_that_reads_reset_does_not_compile(lab):
    for features in ('NP_EMPTY | NP_COUNTER', 'NP_SWAP | NP_COUNTER'):
        failed = run_module('ebpf_probe', dict(where(lab), name='bad', source=COUNT_PROBE.replace('FEATURES', features)))
        assert failed.get('failed') and 'NP_COUNTER' in failed['msg'] and 'interval counts' in failed['msg'], failed
    assert not os.path.exists(os.path.join(RUN_ROOT, 'chains', str(lab.netns_inode(lab.ns_b)), lab.if_b,
                                           'xdp-ingress.json'))


def test_fleet_report_and_facts_module_in_a_play(lab, tmp_path):
    add_probe(lab, 'count', probe='counter')
    lab.send_udp(9, PORT)
    rc, recap, out = run_playbook('playbooks/fleet_report.yml', {'fleet_netns': [lab.ns_b]})
    assert rc == 0, out
    assert recap['localhost']['failed'] == 0
    assert 'count' in out and 'by_proto' in out and lab.ns_b in out
    play = tmp_path / 'play.yml'
    play.write_text('''
- hosts: localhost
  gather_facts: true
  vars:
    ansible_facts_modules: [netprobe.ebpf.ebpf_facts]
  module_defaults:
    netprobe.ebpf.ebpf_facts: {gather_subset: [chains, metrics], netns: [%s]}
  tasks:
    - ansible.builtin.assert:
        that:
          - ansible_facts.netprobe.chains[0].probes[0].name == 'count'
          - (ansible_facts.netprobe.metrics[0].entries | selectattr('key.l4_proto', 'eq', 17) | first).value.packets == 9
''' % lab.ns_b)
    rc, recap, out = run_playbook(str(play))
    assert rc == 0 and recap['localhost']['failed'] == 0, out


def test_swap_probe_patched_and_removed_while_its_twin_runs(lab):
    swap = COUNT_PROBE.replace('FEATURES', 'NP_SWAP')
    add_probe(lab, 'swapped', source=swap)
    lab.send_udp(4, PORT)
    assert seen(metrics_info(lab, consume=True)['metrics'], 'swapped') == 4
    assert active_copy(lab, 'swapped', 'xdp', 'ingress')[0] == 'twin'
    patched = add_probe(lab, 'swapped', source=swap, cflags=['-DPATCHED=1'])
    assert patched['changed'] and patched['probe']['build'] in ('bcc', 'cached')
    # the patched probe keeps its maps and the copy that was running: the twin's counts carry on
    copy, prog_id = active_copy(lab, 'swapped', 'xdp', 'ingress')   # asserts no drift, attached
    assert copy == 'twin' and prog_id == patched['probe']['prog_id']
    lab.send_udp(6, PORT)
    assert seen(metrics_info(lab, consume=True)['metrics'], 'swapped') == 6
    ok(run_module('ebpf_probe', dict(where(lab), name='swapped', state='absent')))
    link = json.loads(sh('ip', '-n', lab.ns_b, '-d', '-j', 'link', 'show', lab.if_b).stdout)[0]
    assert 'xdp' not in link
    assert not os.path.exists(os.path.join(PIN_ROOT, str(lab.netns_inode(lab.ns_b)), lab.if_b, 'xdp-ingress'))


def test_patched_probe_keeps_its_metrics_unless_the_layout_changes_or_a_reset_is_asked(lab):
    """Issue 12: fixing one line of a probe must not lose its history."""
    probe = COUNT_PROBE.replace('FEATURES', '0')
    add_probe(lab, 'kept', source=probe)
    lab.send_udp(5, PORT)
    patched = add_probe(lab, 'kept', source=probe, cflags=['-DFIXED=1'])
    assert patched['changed'] and patched['notes'] == []
    lab.send_udp(3, PORT)
    values = metrics_info(lab)['metrics']
    assert seen(values, 'kept') == 8  # 5 before the patch, 3 after, one map throughout
    assert metric(values, 'kept', 'by_port')['entries'][0]['value'] == 8

    # by_port changes layout (u16 -> u32 keys): it starts fresh and the notes say so; seen carries on
    relaid = probe.replace('BPF_HASH(by_port, __u16,', 'BPF_HASH(by_port, __u32,').replace(
        '__u16 port = pkt.dport;', '__u32 port = pkt.dport;')
    changed = add_probe(lab, 'kept', source=relaid)
    assert any('by_port' in n and 'fresh' in n for n in changed['notes']), changed['notes']
    lab.send_udp(2, PORT)
    values = metrics_info(lab)['metrics']
    assert seen(values, 'kept') == 10
    assert metric(values, 'kept', 'by_port')['entries'][0]['value'] == 2

    # reset_metrics: fresh maps on purpose
    reset = add_probe(lab, 'kept', source=relaid, cflags=['-DFIXED=2'], reset_metrics=True)
    assert reset['changed']
    lab.send_udp(1, PORT)
    assert seen(metrics_info(lab)['metrics'], 'kept') == 1
