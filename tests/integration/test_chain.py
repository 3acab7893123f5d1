"""The chain engine through Ansible, on the real kernel, with real traffic (issue 2)."""

import json
import os
import struct
import subprocess
import sys
import threading
import time

import pytest

from lab import PIN_ROOT, REPO, RUN_ROOT, run_module, run_playbook, sh

UDP = 17
PORT = 40000
COUNTER = {'probe': 'counter'}
DROP = {'source': '#include "netprobe.h"\nNP_PROBE(ctx) { return NP_DROP; }\n'}

# (mode, hook): traffic goes A -> B for ingress chains on B's veth, B -> A for egress ones.
HOOKS = [('xdp', 'ingress'), ('tc', 'ingress'), ('tc', 'egress')]


def target(lab, mode, hook):
    return {'interface': lab.if_b, 'netns': lab.ns_b, 'mode': mode, 'hook': hook}


def chain(lab, mode, hook, probes, **extra):
    args = dict(target(lab, mode, hook), probes=probes, **extra)
    result = run_module('ebpf_chain', args)
    assert not result.get('failed'), result.get('msg')
    return result


def state(lab, mode, hook):
    path = os.path.join(RUN_ROOT, 'chains', str(lab.netns_inode(lab.ns_b)), lab.if_b, '%s-%s.json' % (mode, hook))
    with open(path) as f:
        return json.load(f)


def udp_count(lab, mode, hook, probe):
    """UDP packets the counter probe saw, summed over CPUs, read from its pinned map."""
    rec = next(p for p in state(lab, mode, hook)['probes'] if p['name'] == probe)
    pin = os.path.join(PIN_ROOT, str(lab.netns_inode(lab.ns_b)), lab.if_b, '%s-%s' % (mode, hook), probe,
                       'g%d' % rec['gen'], 'maps', 'by_proto')
    dump = json.loads(sh('bpftool', '-j', 'map', 'dump', 'pinned', pin).stdout)

    def raw(hexes):
        return bytes(int(h, 16) for h in hexes)
    # key: {u16 l3_proto, u8 l4_proto, u8 pad}; value per CPU: {u64 packets, u64 bytes}
    return sum(struct.unpack_from('=Q', raw(v['value']))[0]
               for e in dump if raw(e['key'])[2] == UDP for v in e['values'])


def traffic(lab, hook, count, port=PORT):
    """Send count UDP packets through the hook; returns how many reached the peer."""
    if hook == 'ingress':
        rx = lab.receiver(port)
        lab.send_udp(count, port)
    else:
        rx = lab.receiver(port, ns=lab.ns_a)
        lab.send_udp(count, port, src_ns=lab.ns_b, dst=lab.ip_a)
    got = rx.count()
    rx.sock.close()
    return got


def prog_ids(result):
    return dict((p['name'], p['prog_id']) for p in result['chain']['probes'])


def names(result):
    return [p['name'] for p in result['chain']['probes']]


def build(result, name):
    """How the probe's program was obtained in this run: bcc (compiled), cached (compiled before on this
    host), bytecode (prebuilt, shipped with the task)."""
    return next(p for p in result['chain']['probes'] if p['name'] == name)['build']


@pytest.mark.parametrize('mode,hook', HOOKS)
def test_three_probes_count_and_a_drop_in_the_middle_stops_the_rest(lab, mode, hook):
    probes = [dict(COUNTER, name=n) for n in ('first', 'middle', 'last')]
    result = chain(lab, mode, hook, probes)
    assert result['changed'] and result['chain']['attached']
    assert names(result) == ['first', 'middle', 'last']

    assert traffic(lab, hook, 20) == 20
    assert [udp_count(lab, mode, hook, n) for n in ('first', 'middle', 'last')] == [20, 20, 20]

    before = prog_ids(result)
    patched = chain(lab, mode, hook, [probes[0], dict(DROP, name='middle'), probes[2]])
    assert names(patched) == ['first', 'middle', 'last']
    assert build(patched, 'middle') in ('bcc', 'cached') and patched['compiled'] in ([], ['middle'])
    after = prog_ids(patched)
    assert after['first'] == before['first'] and after['last'] == before['last']
    assert after['middle'] != before['middle']

    assert traffic(lab, hook, 15) == 0
    assert udp_count(lab, mode, hook, 'first') == 35
    assert udp_count(lab, mode, hook, 'last') == 20


def test_patch_in_the_middle_under_traffic_keeps_position_and_loses_nothing(lab):
    probes = [dict(COUNTER, name=n) for n in ('a', 'b', 'c')]
    chain(lab, 'xdp', 'ingress', probes)
    rx = lab.receiver(PORT)
    stop = threading.Event()
    sent = []

    def sender():
        s = lab.open_socket(lab.ns_a)
        while not stop.is_set():
            s.sendto(b'x' * 32, (lab.ip_b, PORT))
            sent.append(1)
            time.sleep(0.0005)

    def receiver():
        while not stop.is_set():
            rx.count(settle=0.05)

    threads = [threading.Thread(target=sender), threading.Thread(target=receiver)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        patched = chain(lab, 'xdp', 'ingress', [probes[0], dict(COUNTER, name='b', cflags=['-DPATCHED=1']), probes[2]])
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert names(patched) == ['a', 'b', 'c'] and build(patched, 'b') in ('bcc', 'cached')
    total = len(sent)
    assert rx.count() == total
    assert udp_count(lab, 'xdp', 'ingress', 'a') == total
    assert udp_count(lab, 'xdp', 'ingress', 'c') == total  # the tail kept counting through the patch
    # the patched b kept its maps (same layout): its count goes on from before the patch, nothing lost
    assert udp_count(lab, 'xdp', 'ingress', 'b') == total
    assert patched['notes'] == []


def probe(lab, name, **args):
    full = dict(target(lab, 'tc', 'ingress'), name=name, **args)
    result = run_module('ebpf_probe', full)
    assert not result.get('failed'), result.get('msg')
    return result


def test_insert_and_remove_at_head_middle_and_tail_keep_the_chain_whole(lab):
    seen = {}

    def check(expected):
        assert names(result) == expected
        assert traffic(lab, 'ingress', 5) == 5
        for n in expected:
            seen[n] = seen.get(n, 0) + 5
            assert udp_count(lab, 'tc', 'ingress', n) == seen[n], n

    result = probe(lab, 'm', **COUNTER)
    check(['m'])
    result = probe(lab, 'h', position=0, **COUNTER)
    check(['h', 'm'])
    result = probe(lab, 't', **COUNTER)
    check(['h', 'm', 't'])
    result = probe(lab, 'hm', after='h', **COUNTER)
    check(['h', 'hm', 'm', 't'])
    result = probe(lab, 'mt', before='t', **COUNTER)
    check(['h', 'hm', 'm', 'mt', 't'])
    ids = prog_ids(result)
    for gone, expected in (('h', ['hm', 'm', 'mt', 't']), ('m', ['hm', 'mt', 't']), ('t', ['hm', 'mt'])):
        result = probe(lab, gone, state='absent')
        check(expected)
        assert all(prog_ids(result)[n] == ids[n] for n in expected)


def test_reorder_moves_without_recompiling(lab):
    probes = [dict(COUNTER, name=n) for n in ('a', 'b', 'c', 'd')]
    first = chain(lab, 'xdp', 'ingress', probes)
    assert traffic(lab, 'ingress', 5) == 5
    moved = chain(lab, 'xdp', 'ingress', [probes[3], probes[0], probes[1], probes[2]])
    assert names(moved) == ['d', 'a', 'b', 'c'] and moved['compiled'] == []
    # the reordered chain is built beside the live one: new copies of the programs over the same maps
    assert set(prog_ids(moved).values()).isdisjoint(prog_ids(first).values())
    assert traffic(lab, 'ingress', 7) == 7
    assert [udp_count(lab, 'xdp', 'ingress', n) for n in 'dabc'] == [12, 12, 12, 12]
    # moving the tail to the middle rebuilds only the part between: the head keeps its program
    again = chain(lab, 'xdp', 'ingress', [probes[3], probes[0], probes[2], probes[1]])
    assert prog_ids(again)['d'] == prog_ids(moved)['d'] and prog_ids(again)['a'] == prog_ids(moved)['a']
    assert prog_ids(again)['b'] != prog_ids(moved)['b'] and prog_ids(again)['c'] != prog_ids(moved)['c']


def test_second_identical_run_changes_and_compiles_nothing(lab):
    probes = [dict(COUNTER, name='a'), dict(DROP, name='b')]
    chain(lab, 'tc', 'egress', probes)
    again = chain(lab, 'tc', 'egress', probes)
    assert again['changed'] is False and again['compiled'] == [] and again['drift'] == []
    single = run_module('ebpf_probe', dict(target(lab, 'tc', 'egress'), name='a', **COUNTER))
    assert single['changed'] is False and single['compiled'] == []


def test_check_mode_changes_nothing_and_diff_shows_the_chain(lab):
    chain(lab, 'xdp', 'ingress', [dict(COUNTER, name='a')])
    planned = run_module('ebpf_chain', dict(target(lab, 'xdp', 'ingress'),
                                            probes=[dict(COUNTER, name='a'), dict(DROP, name='b')]),
                         check=True, diff=True)
    assert planned['changed'] and planned['compiled'] == []
    assert names(planned) == ['a', 'b']
    diff = [line for line in planned['_output'].splitlines() if line.startswith(('+', '-'))]
    assert any(line.startswith('+') and '"b (' in line for line in diff), planned['_output']
    assert not any(line.startswith('-') and '"b (' in line for line in diff)
    assert [p['name'] for p in state(lab, 'xdp', 'ingress')['probes']] == ['a']
    assert traffic(lab, 'ingress', 3) == 3


BAD_C = {'source': 'int broken(;'}
BAD_VERIFIER = {'source': '#include "netprobe.h"\nNP_PROBE(ctx) { char *p = (char *)(long)ctx->data;\n'
                          ' return p[100] ? NP_PASS : NP_DROP; }\n'}


@pytest.mark.parametrize('args,expected', [
    (dict(name='bad', **BAD_C), 'does not compile'),
    (dict(name='bad', **BAD_VERIFIER), 'verifier'),
    (dict(name='bad', interface='nosuch0', **COUNTER), "interface 'nosuch0' not found"),
    (dict(name='bad', netns='npt-nosuch', **COUNTER), 'network namespace'),
    (dict(name='bad', hook='egress', mode='xdp', **COUNTER), 'XDP runs on ingress only'),
    (dict(name='../../escape', **COUNTER), 'invalid probe name'),
    (dict(name='bad', probe='nosuch'), 'unknown bundled probe'),
    (dict(name='bad', source='x', probe='counter'), 'only one of'),
])
def test_bad_input_fails_clearly_and_the_chain_keeps_working(lab, args, expected):
    chain(lab, 'xdp', 'ingress', [dict(COUNTER, name='a'), dict(COUNTER, name='b')])
    ids = prog_ids(run_module('ebpf_chain', dict(target(lab, 'xdp', 'ingress'),
                                                 probes=[dict(COUNTER, name='a'), dict(COUNTER, name='b')])))
    full = dict(target(lab, 'xdp', 'ingress'), position=1)
    full.update(args)
    result = run_module('ebpf_probe', full)
    assert result.get('failed'), result
    assert expected in result['msg']
    assert 'Traceback' not in result['msg']
    if expected == 'does not compile':
        assert 'error:' in result['msg']
    if expected == 'verifier':
        assert 'invalid access to packet' in result['msg']
    assert traffic(lab, 'ingress', 4) == 4
    assert udp_count(lab, 'xdp', 'ingress', 'b') == 4
    assert prog_ids(run_module('ebpf_chain', dict(target(lab, 'xdp', 'ingress'),
                                                  probes=[dict(COUNTER, name='a'), dict(COUNTER, name='b')]))) == ids


def xdp_prog_id(lab):
    out = json.loads(sh('ip', '-j', '-n', lab.ns_b, 'link', 'show', lab.if_b).stdout)[0]
    return out.get('xdp', {}).get('prog', {}).get('id', 0)


def tc_filters(lab, hook):
    return sh('tc', '-n', lab.ns_b, 'filter', 'show', 'dev', lab.if_b, hook).stdout


@pytest.mark.parametrize('mode,hook', HOOKS)
def test_absent_leaves_no_pins_or_attachments(lab, mode, hook):
    chain(lab, mode, hook, [dict(COUNTER, name='a'), dict(COUNTER, name='b')])
    for name in ('a', 'b'):
        result = run_module('ebpf_probe', dict(target(lab, mode, hook), name=name, state='absent'))
        assert result['changed']
    assert not os.path.exists(os.path.join(PIN_ROOT, str(lab.netns_inode(lab.ns_b))))
    assert not os.path.exists(os.path.join(RUN_ROOT, 'chains', str(lab.netns_inode(lab.ns_b))))
    assert xdp_prog_id(lab) == 0
    assert 'netprobe' not in tc_filters(lab, 'ingress') + tc_filters(lab, 'egress')
    assert 'clsact' not in sh('tc', '-n', lab.ns_b, 'qdisc', 'show', 'dev', lab.if_b).stdout
    again = run_module('ebpf_chain', dict(target(lab, mode, hook), state='absent'))
    assert again['changed'] is False


def test_drift_program_detached_by_hand_is_reported_and_repaired(lab):
    # the netlink path: a bpf_link cannot be detached by hand (test_attach_chain.py covers that path)
    chain(lab, 'xdp', 'ingress', [dict(COUNTER, name='a')], xdp_attach='netlink')
    sh('ip', '-n', lab.ns_b, 'link', 'set', lab.if_b, 'xdpgeneric', 'off')
    assert xdp_prog_id(lab) == 0
    repaired = chain(lab, 'xdp', 'ingress', [dict(COUNTER, name='a')], xdp_attach='netlink')
    assert repaired['changed'] and repaired['compiled'] == []
    assert any('detached' in d for d in repaired['drift'])
    assert xdp_prog_id(lab) == repaired['chain']['probes'][0]['prog_id']
    assert traffic(lab, 'ingress', 3) == 3 and udp_count(lab, 'xdp', 'ingress', 'a') == 3


def test_drift_interface_recreated_is_reattached(lab):
    chain(lab, 'tc', 'ingress', [dict(COUNTER, name='a'), dict(COUNTER, name='b')])
    sh('ip', '-n', lab.ns_b, 'link', 'del', lab.if_b)
    sh('ip', 'link', 'add', lab.if_a, 'netns', lab.ns_a, 'type', 'veth', 'peer', 'name', lab.if_b, 'netns', lab.ns_b)
    for ns, ifname, ip in ((lab.ns_a, lab.if_a, lab.ip_a), (lab.ns_b, lab.if_b, lab.ip_b)):
        sh('ip', '-n', ns, 'addr', 'add', ip + '/24', 'dev', ifname)
        sh('ip', '-n', ns, 'link', 'set', ifname, 'up')
    repaired = chain(lab, 'tc', 'ingress', [dict(COUNTER, name='a'), dict(COUNTER, name='b')])
    assert any('recreated' in d for d in repaired['drift']) and repaired['compiled'] == []
    assert traffic(lab, 'ingress', 3) == 3
    assert udp_count(lab, 'tc', 'ingress', 'b') == 3


def test_pins_removed_by_hand_are_rebuilt(lab):
    chain(lab, 'xdp', 'ingress', [dict(COUNTER, name='a'), dict(COUNTER, name='b')])
    subprocess.run(['rm', '-rf', os.path.join(PIN_ROOT, str(lab.netns_inode(lab.ns_b)))], check=True)
    repaired = chain(lab, 'xdp', 'ingress', [dict(COUNTER, name='a'), dict(COUNTER, name='b')])
    # reloaded from this host's bytecode of the probes, without a compile
    assert repaired['changed'] and repaired['compiled'] == [] and build(repaired, 'a') == 'bytecode'
    assert traffic(lab, 'ingress', 3) == 3
    assert udp_count(lab, 'xdp', 'ingress', 'b') == 3


def test_a_chain_from_metadata_version_1_runs_on_and_moves_to_numbered_copies_when_edited(lab):
    probes = [dict(COUNTER, name='a'), dict(COUNTER, name='b')]
    ids = prog_ids(chain(lab, 'xdp', 'ingress', probes))
    # what version 1 left: each probe's program pinned inside its map set (g<gen>/prog), no copy numbers
    chain_dir = os.path.join(PIN_ROOT, str(lab.netns_inode(lab.ns_b)), lab.if_b, 'xdp-ingress')
    meta = os.path.join(RUN_ROOT, 'chains', str(lab.netns_inode(lab.ns_b)), lab.if_b, 'xdp-ingress.json')
    old = state(lab, 'xdp', 'ingress')
    for rec in old['probes']:
        os.rename(os.path.join(chain_dir, rec['name'], 'p%d' % rec.pop('copy')),
                  os.path.join(chain_dir, rec['name'], 'g%d' % rec['gen'], 'prog'))
    old['version'] = 1
    with open(meta, 'w') as f:
        json.dump(old, f)

    again = chain(lab, 'xdp', 'ingress', probes)
    assert again['changed'] is False and again['drift'] == [] and prog_ids(again) == ids
    assert traffic(lab, 'ingress', 3) == 3 and udp_count(lab, 'xdp', 'ingress', 'b') == 3

    edited = chain(lab, 'xdp', 'ingress', [dict(COUNTER, name='a', cflags=['-DNP_TEST_EDIT=1']), dict(COUNTER, name='b')])
    assert edited['changed'] and edited['drift'] == [] and prog_ids(edited)['b'] == ids['b']
    recs = dict((r['name'], r) for r in state(lab, 'xdp', 'ingress')['probes'])
    assert state(lab, 'xdp', 'ingress')['version'] == 2 and recs['a']['copy'] == 1 and recs['b']['copy'] == 0
    assert os.path.exists(os.path.join(chain_dir, 'a', 'p1'))
    assert not os.path.exists(os.path.join(chain_dir, 'a', 'g%d' % recs['a']['gen'], 'prog'))
    assert os.path.exists(os.path.join(chain_dir, 'b', 'g%d' % recs['b']['gen'], 'prog'))  # untouched, still v1's
    assert traffic(lab, 'ingress', 3) == 3 and udp_count(lab, 'xdp', 'ingress', 'b') == 6
    assert chain(lab, 'xdp', 'ingress', [dict(COUNTER, name='a', cflags=['-DNP_TEST_EDIT=1']),
                                         dict(COUNTER, name='b')])['changed'] is False
    run_module('ebpf_chain', dict(target(lab, 'xdp', 'ingress'), state='absent'))
    assert not os.path.exists(chain_dir) and not os.path.exists(meta)


FOREIGN_PRELUDE = '''
import sys
sys.path.insert(0, sys.argv[3])
from ansible_collections.netprobe.ebpf.plugins.module_utils._compile import prepare_headers
prepare_headers()
from bcc import BPF
from pyroute2 import IPRoute
'''

FOREIGN_TC = FOREIGN_PRELUDE + '''
b = BPF(text="int f(struct __sk_buff *s) { return 0; }")
fn = b.load_func("f", BPF.SCHED_CLS)
ipr = IPRoute(netns=sys.argv[1], flags=0)
idx = ipr.link_lookup(ifname=sys.argv[2])[0]
ipr.tc("add", "clsact", idx)
ipr.tc("add-filter", "bpf", idx, ":1", fd=fn.fd, name="foreign", parent="ffff:fff2", prio=10, direct_action=True)
'''


def attach_foreign(lab, script):
    subprocess.run([sys.executable, '-c', script, '/run/netns/' + lab.ns_b, lab.if_b,
                    os.path.join(REPO, '.cache', 'collections')], check=True)


def test_foreign_tc_filters_and_xdp_programs_are_left_alone(lab):
    attach_foreign(lab, FOREIGN_TC)
    # the cls_bpf path beside a foreign filter (TCX beside foreign programs: test_attach_chain.py)
    chain(lab, 'tc', 'ingress', [dict(COUNTER, name='a')], tc_attach='cls_bpf')
    assert 'foreign' in tc_filters(lab, 'ingress') and 'netprobe-a' in tc_filters(lab, 'ingress')
    assert traffic(lab, 'ingress', 2) == 2
    run_module('ebpf_chain', dict(target(lab, 'tc', 'ingress'), state='absent', tc_attach='cls_bpf'))
    assert 'foreign' in tc_filters(lab, 'ingress') and 'netprobe' not in tc_filters(lab, 'ingress')
    assert 'clsact' in sh('tc', '-n', lab.ns_b, 'qdisc', 'show', 'dev', lab.if_b).stdout

    attach_foreign(lab, FOREIGN_XDP)
    foreign_id = xdp_prog_id(lab)
    assert foreign_id
    result = run_module('ebpf_probe', dict(target(lab, 'xdp', 'ingress'), name='x', **COUNTER))
    assert result.get('failed') and 'did not attach' in result['msg']
    assert xdp_prog_id(lab) == foreign_id


FOREIGN_XDP = FOREIGN_PRELUDE + '''
b = BPF(text="int f(struct xdp_md *c) { return 2; }")
fn = b.load_func("f", BPF.XDP)
ipr = IPRoute(netns=sys.argv[1], flags=0)
idx = ipr.link_lookup(ifname=sys.argv[2])[0]
ipr.link("set", index=idx, IFLA_XDP={"attrs": [["IFLA_XDP_FD", fn.fd], ["IFLA_XDP_FLAGS", 2]]})
'''


def test_concurrent_runs_are_serialised(lab):
    from concurrent.futures import ThreadPoolExecutor
    jobs = [dict(target(lab, 'tc', 'ingress'), name='p%d' % i, **COUNTER) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda a: run_module('ebpf_probe', a), jobs))
    assert all(not r.get('failed') for r in results), [r.get('msg') for r in results]
    final = [p['name'] for p in state(lab, 'tc', 'ingress')['probes']]
    assert sorted(final) == ['p0', 'p1', 'p2']
    assert traffic(lab, 'ingress', 3) == 3
    assert all(udp_count(lab, 'tc', 'ingress', n) == 3 for n in final)


def test_probe_code_from_a_controller_file(lab, tmp_path):
    src = tmp_path / 'drop_udp.c'
    src.write_text('#include "netprobe.h"\nNP_PROBE(ctx)\n{\n\tstruct np_packet pkt;\n\tnp_parse(ctx, &pkt);\n'
                   '\treturn pkt.udp ? NP_DROP : NP_PASS;\n}\n')
    result = run_module('ebpf_probe', dict(target(lab, 'tc', 'ingress'), name='filed', src=str(src)))
    assert result['changed'] and result['probe']['origin'] == 'file:%s' % src
    assert traffic(lab, 'ingress', 3) == 0
    missing = run_module('ebpf_probe', dict(target(lab, 'tc', 'ingress'), name='other', src=str(tmp_path / 'no.c')))
    assert missing.get('failed') and 'not found on the controller' in missing['msg']


def test_a_chain_task_runs_in_the_background_with_async(lab, tmp_path):
    """async / poll: 0 (what a change that may cut its own connection off uses), then async_status."""
    playbook = tmp_path / 'async.yml'
    playbook.write_text('''
- hosts: localhost
  gather_facts: false
  tasks:
    - netprobe.ebpf.ebpf_chain:
        interface: %s
        netns: %s
        persist: false
        probes: [{name: rx, probe: counter}]
      async: 120
      poll: 0
      register: job
    - ansible.builtin.async_status:
        jid: "{{ job.ansible_job_id }}"
      register: done
      until: done.finished
      retries: 120
      delay: 1
    - ansible.builtin.assert:
        that: [done.changed, "done.chain.attached", "done.chain.probes | map(attribute='name') | list == ['rx']"]
''' % (lab.if_b, lab.ns_b))
    rc, recap, out = run_playbook(str(playbook))
    assert rc == 0 and recap['localhost']['failed'] == 0, out[-3000:]
    assert 'xdp' in sh('ip', '-n', lab.ns_b, '-d', 'link', 'show', lab.if_b).stdout
