# -*- coding: utf-8 -*-
"""playbooks/deploy.yml (roles prereqs + chain) against a test lab: real chains, real traffic.

The chain role's promises: a rerun changes nothing; moving or changing one probe edits only that
probe; purge removes exactly the chains the role deployed and no longer declares; wrong variables
fail before anything on the host changes.
"""

import json
import os
import re

from lab import BIN, REPO, ansible_env, run_module, run_tree, sh

DEPLOY = 'playbooks/deploy.yml'
COUNTER = {'probe': 'counter'}
DROP_UDP_PORT = '''#include "netprobe.h"
NP_PROBE(ctx)
{
    struct np_packet pkt;
    np_parse(ctx, &pkt);
    return (pkt.udp && pkt.dport == DROP_PORT) ? NP_DROP : NP_PASS;
}
'''


def probe(name, **code):
    return dict(name=name, **(code or COUNTER))


def drop(name, port):
    return probe(name, source=DROP_UDP_PORT, cflags=['-DDROP_PORT=%d' % port])


RESULT = re.compile(r'^(?:TASK \[(?:[^\]]*? : )?(?P<task>.*)\] \**$'
                    r'|(?P<status>ok|changed|fatal|failed|skipping): \[localhost\](?:: FAILED!)?(?:(?: =>)? \(item=.*?\))? => )',
                    re.M)


def run_playbook(playbook, extra_vars):
    """ansible-playbook -v; returns (rc, {'tasks': [(task, [(status, result)])], 'stats': recap})."""
    proc = run_tree([os.path.join(BIN, 'ansible-playbook'), '-v', playbook, '-e', json.dumps(extra_vars)],
                    cwd=REPO, env=ansible_env())
    tasks, decoder = [], json.JSONDecoder()
    for m in RESULT.finditer(proc.stdout):
        if m.group('task') is not None:
            tasks.append((m.group('task'), []))
        elif tasks:
            result = decoder.raw_decode(proc.stdout[m.end():])[0] if proc.stdout[m.end():].startswith('{') else {}
            tasks[-1][1].append((m.group('status'), result))
    stats = {}
    for line in proc.stdout.split('PLAY RECAP')[-1].splitlines():
        if ' : ' in line and 'ok=' in line:
            host, counts = line.split(' : ', 1)
            stats[host.strip()] = dict((k, int(v)) for k, v in (kv.split('=') for kv in counts.split()))
    if not stats:
        raise AssertionError('ansible-playbook did not run (rc %d):\n%s\n%s'
                             % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc.returncode, {'tasks': tasks, 'stats': stats, 'output': proc.stdout}


def deploy(record, interfaces, purge=False):
    return run_playbook(DEPLOY, {'netprobe_hosts': 'localhost', 'chain_interfaces': interfaces,
                                 'chain_record_path': str(record), 'chain_purge': purge})


def chain_state(lab, ns, ifname, name):
    """[(probe, prog_id)] from the engine's metadata, or None when the chain does not exist."""
    path = '/run/netprobe/chains/%d/%s/%s.json' % (lab.netns_inode(ns), ifname, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [(p['name'], p['prog_id']) for p in json.load(f)['probes']]


def names(chain):
    return [name for name, _prog_id in chain]


def failed_task(out):
    """(task name, message) of the first failure, or (None, None)."""
    for name, results in out['tasks']:
        for status, result in results:
            if status in ('fatal', 'failed'):
                return name, result.get('msg', '')
    return None, None


def chain_results(out):
    """{chain key: module result} of the role's converge task."""
    for name, results in out['tasks']:
        if name == 'Converge the declared chains':
            return dict((r['item']['key'], r) for _status, r in results)
    raise AssertionError('the converge task did not run')


def lab_chains(lab, ingress, egress=None):
    chains = [{'hook': 'ingress', 'mode': 'xdp', 'probes': ingress}]
    if egress:
        chains.append({'hook': 'egress', 'mode': 'tc', 'probes': egress})
    return [{'interface': lab.if_b, 'netns': lab.ns_b, 'chains': chains}]


def test_deploy_rerun_and_edit_one_probe(lab, tmp_path):
    record = tmp_path / 'chains.json'
    ingress = [probe('seen'), drop('drop', 9), probe('passed')]
    rc, out = deploy(record, lab_chains(lab, ingress, [probe('sent')]))
    assert rc == 0, failed_task(out)
    first = chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress')
    assert names(first) == ['seen', 'drop', 'passed']
    sent = chain_state(lab, lab.ns_b, lab.if_b, 'tc-egress')
    assert names(sent) == ['sent']

    # the kernel does what the chain says: UDP to port 9 dropped, other ports pass
    kept, dropped = lab.receiver(7000), lab.receiver(9)
    lab.send_udp(5, 7000)
    lab.send_udp(4, 9)
    assert kept.count() == 5
    assert dropped.count() == 0

    # a rerun changes nothing at all (the role is idempotent, nothing compiles)
    rc, out = deploy(record, lab_chains(lab, ingress, [probe('sent')]))
    assert rc == 0, failed_task(out)
    assert out['stats']['localhost']['changed'] == 0
    assert chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress') == first

    # moving one probe rebuilds the part of the chain that changes beside the live one, without a compile:
    # new copies of the programs, over the same maps
    moved = [probe('passed'), probe('seen'), drop('drop', 9)]
    rc, out = deploy(record, lab_chains(lab, moved, [probe('sent')]))
    assert rc == 0, failed_task(out)
    results = chain_results(out)
    assert results['%s|%s|ingress|xdp' % (lab.ns_b, lab.if_b)]['changed']
    assert results['%s|%s|ingress|xdp' % (lab.ns_b, lab.if_b)]['compiled'] == []
    assert not results['%s|%s|egress|tc' % (lab.ns_b, lab.if_b)]['changed']
    after_move = chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress')
    assert names(after_move) == ['passed', 'seen', 'drop']
    assert set(dict(after_move).values()).isdisjoint(dict(first).values())
    first = after_move

    # changing one probe's build configuration recompiles that probe only (or loads what this host compiled
    # for the same configuration before)
    changed = [probe('passed'), probe('seen'), drop('drop', 10)]
    rc, out = deploy(record, lab_chains(lab, changed, [probe('sent')]))
    assert rc == 0, failed_task(out)
    assert chain_results(out)['%s|%s|ingress|xdp' % (lab.ns_b, lab.if_b)]['compiled'] in ([], ['drop'])
    after_change = dict(chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress'))
    assert after_change['drop'] != dict(first)['drop']
    assert after_change['seen'] == dict(first)['seen'] and after_change['passed'] == dict(first)['passed']
    assert chain_state(lab, lab.ns_b, lab.if_b, 'tc-egress') == sent
    port10 = lab.receiver(10)
    lab.send_udp(3, 9)
    lab.send_udp(3, 10)
    assert dropped.count() == 3
    assert port10.count() == 0


def test_purge_removes_exactly_the_undeclared_chains(lab, tmp_path):
    record = tmp_path / 'chains.json'
    both = [
        {'interface': lab.if_b, 'netns': lab.ns_b, 'chains': [{'hook': 'ingress', 'probes': [probe('b-in')]}]},
        {'interface': lab.if_a, 'netns': lab.ns_a, 'chains': [{'hook': 'egress', 'probes': [probe('a-out')]}]},
    ]
    rc, out = deploy(record, both)
    assert rc == 0, failed_task(out)
    b_in = chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress')
    assert chain_state(lab, lab.ns_a, lab.if_a, 'tc-egress') is not None
    # a chain the role does not manage, on the interface about to be dropped from the variables
    result = run_module('ebpf_chain', {'interface': lab.if_a, 'netns': lab.ns_a,
                                       'probes': [{'name': 'adhoc', 'probe': 'counter'}]})
    assert result.get('changed'), result
    adhoc = chain_state(lab, lab.ns_a, lab.if_a, 'xdp-ingress')

    # without purge, an interface left out of the variables keeps its chains
    rc, out = deploy(record, both[:1])
    assert rc == 0, failed_task(out)
    assert chain_state(lab, lab.ns_a, lab.if_a, 'tc-egress') is not None

    # with purge, exactly the role's chain on that interface goes; everything else stays as it was
    rc, out = deploy(record, both[:1], purge=True)
    assert rc == 0, failed_task(out)
    assert chain_state(lab, lab.ns_a, lab.if_a, 'tc-egress') is None
    assert not os.path.exists('/sys/fs/bpf/netprobe/%d/%s/tc-egress' % (lab.netns_inode(lab.ns_a), lab.if_a))
    assert chain_state(lab, lab.ns_a, lab.if_a, 'xdp-ingress') == adhoc
    assert chain_state(lab, lab.ns_b, lab.if_b, "xdp-ingress") == b_in, chain_results(out)
    with open(str(record)) as f:
        assert [c['key'] for c in json.load(f)['chains']] == ['%s|%s|ingress|xdp' % (lab.ns_b, lab.if_b)]

    # a purge run with the same variables changes nothing
    rc, out = deploy(record, both[:1], purge=True)
    assert rc == 0, failed_task(out)
    assert out['stats']['localhost']['changed'] == 0


def test_wrong_variables_fail_before_anything_changes(lab, tmp_path):
    record = tmp_path / 'chains.json'
    good = lab_chains(lab, [probe('seen')])
    rc, out = deploy(record, good)
    assert rc == 0, failed_task(out)
    before = chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress')
    record_before = record.read_text()

    def iface(chains, **extra):
        return dict({'interface': lab.if_b, 'netns': lab.ns_b, 'chains': chains}, **extra)

    # each wrong declaration comes with a valid change to the good chain, which must not happen either
    grown = iface([{'hook': 'ingress', 'probes': [probe('seen'), probe('more')]}])
    cases = [
        ('unknown bundled probe', [grown, iface([{'hook': 'egress', 'probes': [probe('x', probe='nope')]}])],
         'Unknown bundled probes nope'),
        ('XDP on egress', [grown, iface([{'hook': 'egress', 'mode': 'xdp', 'probes': [probe('x')]}])],
         'XDP runs on ingress only'),
        ('hook not a hook', [iface([{'hook': 'sideways', 'probes': [probe('x')]}])],
         'value of hook must be one of: ingress, egress'),
        ('no interface', [grown, {'netns': lab.ns_b, 'chains': [{'probes': [probe('x')]}]}],
         'missing required arguments: interface'),
        ('probe without code', [iface([{'probes': [{'name': 'x'}]}])], 'one of the following is required: probe'),
        ('unknown key', [iface([{'probes': [probe('x', probe='counter', colour='red')]}])], 'colour'),
        ('same hook twice', [grown, iface([{'probes': [probe('x')]}])], 'declared more than once'),
        ('interface not on the host', [grown, iface([{'hook': 'egress', 'probes': [probe('x')]}], interface='nosuch0')],
         'nosuch0'),
    ]
    for label, interfaces, message in cases:
        rc, out = deploy(record, interfaces)
        task, msg = failed_task(out)
        assert rc != 0, label
        assert message in msg, (label, task, msg)
        if label == 'interface not on the host':
            assert task.startswith('Plan every declared chain'), (label, task)
        else:
            assert 'Validating arguments' in task or task.startswith('Check'), (label, task)
        assert chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress') == before, label
        assert chain_state(lab, lab.ns_b, lab.if_b, 'tc-egress') is None, label
        assert record.read_text() == record_before, label


def test_purge_cleans_a_chain_whose_namespace_is_gone_through_the_module(lab, tmp_path):
    """The role removes the leftovers of a chain whose namespace was deleted with ebpf_chain netns_id."""
    record = tmp_path / 'chains.json'
    gone_ns = lab.ns_a + 'g'
    sh('ip', 'netns', 'add', gone_ns)
    try:
        sh('ip', '-n', gone_ns, 'link', 'add', 'vg0', 'type', 'veth', 'peer', 'name', 'vg1')
        sh('ip', '-n', gone_ns, 'link', 'set', 'vg0', 'up')
        both = lab_chains(lab, [probe('b-in')]) + [
            {'interface': 'vg0', 'netns': gone_ns, 'chains': [{'hook': 'egress', 'probes': [probe('g-out')]}]}]
        rc, out = deploy(record, both)
        assert rc == 0, failed_task(out)
        ino = lab.netns_inode(gone_ns)
    finally:
        sh('ip', 'netns', 'del', gone_ns)
    try:
        assert os.path.isdir('/sys/fs/bpf/netprobe/%d/vg0/tc-egress' % ino)
        rc, out = deploy(record, both[:1], purge=True)
        assert rc == 0, failed_task(out)
        assert not os.path.exists('/sys/fs/bpf/netprobe/%d' % ino)
        assert not os.path.exists('/run/netprobe/chains/%d' % ino)
        assert not os.path.exists('/run/netprobe/clsact/%d' % ino)
        assert chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress') is not None
    finally:
        sh('rm', '-rf', '/sys/fs/bpf/netprobe/%d' % ino, '/run/netprobe/chains/%d' % ino,
           '/run/netprobe/clsact/%d' % ino)


ROLE_TASK = re.compile(r'^TASK \[netprobe\.ebpf\.(?P<role>\w+) : (?P<task>.*?)\] \**$'
                       r'|^(?P<status>ok|changed|fatal|failed|skipping): \[localhost\]', re.M)
# what an unchanged rerun may run in the prereqs role: the argument check, its set_facts and assert (controller
# only) and one module run; everything else is skipped
FAST_PREREQS_TASKS = 8


def role_tasks(output, role):
    """{task name: [statuses]} of one role's tasks, in the order they ran."""
    tasks, current = {}, None
    for m in ROLE_TASK.finditer(output):
        if m.group('task') is not None:
            current = m.group('task') if m.group('role') == role else None
            if current is not None:
                tasks.setdefault(current, [])
        elif current is not None:
            tasks[current].append(m.group('status'))
    return tasks


def ran(tasks):
    return [name for name, statuses in tasks.items() if set(statuses) & {'ok', 'changed'}]


def test_prereqs_rerun_decides_in_one_module_run_and_repairs_what_is_missing(lab, tmp_path):
    """An unchanged rerun of the prereqs role is one module run; a missing prerequisite or a changed role variable
    still takes the full path and is repaired."""
    sysroot = tmp_path / 'sysroot'
    prereqs = {'prereqs_record_path': str(tmp_path / 'prereqs' / 'prereqs.json'), 'prereqs_restore': True,
               'prereqs_restore_root': str(sysroot)}
    chains = lab_chains(lab, [probe('seen')])

    def run(**more):
        rc, out = run_playbook(DEPLOY, dict(prereqs, netprobe_hosts='localhost', chain_interfaces=chains,
                                            chain_record_path=str(tmp_path / 'chains.json'), **more))
        assert rc == 0, failed_task(out)
        return out, role_tasks(out['output'], 'prereqs')

    out, tasks = run()  # the full path: no record of this role there yet
    assert 'Ask dpkg which of the packages are installed' in ran(tasks)
    assert tasks['Write the record'] == ['changed']
    unit = sysroot / 'etc/systemd/system/netprobe-restore.service'
    assert unit.exists()

    # unchanged: one module run decides, the rest is skipped, nothing changes
    out, tasks = run()
    assert out['stats']['localhost']['changed'] == 0
    assert len(ran(tasks)) <= FAST_PREREQS_TASKS, ran(tasks)
    assert "Read the prerequisites and the restore's state in one run (changes nothing)" in ran(tasks)
    for full in ('Gather the facts this role needs', 'Ask dpkg which of the packages are installed',
                 'Check that the kernel and the libraries can do what is asked', 'Write the record'):
        assert full not in ran(tasks), full
    assert tasks["Fail when the host cannot run netprobe's chains"] == ['ok']
    assert chain_state(lab, lab.ns_b, lab.if_b, 'xdp-ingress') is not None

    # a prerequisite gone (the restore's boot unit): the full path runs and puts it back
    unit.unlink()
    out, tasks = run()
    assert 'Ask dpkg which of the packages are installed' in ran(tasks)
    assert out['stats']['localhost']['changed'] >= 1
    assert unit.exists()
    out, tasks = run()
    assert out['stats']['localhost']['changed'] == 0 and len(ran(tasks)) <= FAST_PREREQS_TASKS, ran(tasks)

    # a changed role variable (what compiles here): the full path runs and records it; then fast again
    out, tasks = run(prereqs_compiler='none')
    assert 'Check that the kernel and the libraries can do what is asked' in ran(tasks)
    assert tasks['Write the record'] == ['changed']
    out, tasks = run(prereqs_compiler='none')
    assert out['stats']['localhost']['changed'] == 0 and len(ran(tasks)) <= FAST_PREREQS_TASKS, ran(tasks)

    # prereqs_fast=false always takes the full path, and finds nothing to change
    out, tasks = run(prereqs_compiler='none', prereqs_fast=False)
    assert 'Ask dpkg which of the packages are installed' in ran(tasks)
    assert out['stats']['localhost']['changed'] == 0
