# -*- coding: utf-8 -*-
"""Chains that outlive the host (docs/persistence.md), on a host of the fleet lab, over ssh.

A "reboot" here is what one leaves behind: the host's bpffs and /run/netprobe are unmounted and mounted fresh
inside its mount namespace and the XDP attachment is removed; the bytecode cache goes too. Then the launcher
that ebpf_restore installed runs as the boot unit would. No systemd or udevd here (DESIGN.md section 12): the
unit and the rule are proven in the kernel matrix; the command they run is proven here.
"""

import json
import os
import re
import socket
import subprocess
import time

import pytest
import yaml

from fleet import Fleet
from lab import BIN, REPO, ansible_env, figure

HOST = 'h01'
SYSROOT = '/var/lib/netprobe/sysroot'  # the host's own tmpfs: nothing lands in this machine's /usr or /etc
LAUNCHER = SYSROOT + '/usr/lib/netprobe/netprobe-restore'
RECORD = '/var/lib/netprobe/records/host/probe0/xdp-ingress.json'
DROPPED_PORT = 9
FIREWALL = [{'name': 'seen', 'probe': 'counter'},
            {'name': 'fw', 'probe': 'firewall',
             'config': {'rules': [{'name': 'discard', 'action': 'drop', 'proto': 'udp', 'dport': DROPPED_PORT}]}},
            {'name': 'passed', 'probe': 'counter'}]
CHAIN = {'interface': 'probe0', 'probes': FIREWALL, 'purge': True}


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    fleet = Fleet(tmp_path_factory.mktemp('fleet'), 1)
    try:
        yield fleet
    finally:
        fleet.down()


def ok(result):
    assert result['_status'] in ('SUCCESS', 'CHANGED'), result
    return result


def chain(fleet, args=None, **extra):
    return ok(fleet.adhoc(HOST, 'ebpf_chain', dict(args or CHAIN, **extra))[HOST])


def reboot(fleet):
    """What a reboot leaves: no pins, no /run/netprobe, no attachment, no bytecode cache (the records stay)."""
    fleet.host_cmd(HOST, 'sh', '-ec', 'umount -l /sys/fs/bpf; mount -t bpf -o mode=700 bpf /sys/fs/bpf; '
                   'rm -rf /run/netprobe; '
                   'ip link set dev probe0 xdp off; rm -rf /var/cache/netprobe/images')
    assert not attached_prog(fleet)


def attached_prog(fleet):
    link = json.loads(fleet.host_cmd(HOST, 'ip', '-j', '-d', 'link', 'show', 'probe0').stdout)[0]
    return (link.get('xdp') or {}).get('prog', {}).get('id')


def launcher(fleet, *args):
    proc = fleet.host_cmd(HOST, LAUNCHER, *args, check=False)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def packets(facts, probe):
    return sum(e['value']['packets'] for m in facts['metrics'] if m['interface'] == 'probe0' and m['probe'] == probe
               for e in m['entries'])


def udp_flood(fleet, count):
    script = ('import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n'
              'for _ in range(%d): s.sendto(b"x" * 32, ("198.18.0.2", %d))\n' % (count, DROPPED_PORT))
    subprocess.run(['ip', 'netns', 'exec', fleet.peer(HOST), 'python3', '-c', script], check=True)


def test_the_boot_path_restores_the_firewall_before_any_playbook_runs(fleet):
    installed = ok(fleet.adhoc(HOST, 'ebpf_restore', {'state': 'installed', 'root': SYSROOT})[HOST])
    assert installed['changed'] and installed['systemd'] is False and installed['enabled'] is None
    assert not ok(fleet.adhoc(HOST, 'ebpf_restore', {'state': 'installed', 'root': SYSROOT})[HOST])['changed']
    unit = fleet.host_cmd(HOST, 'cat', SYSROOT + '/etc/systemd/system/netprobe-restore.service').stdout
    assert 'Before=network-pre.target' in unit and 'ExecStart=/usr/lib/netprobe/netprobe-restore --trigger boot' in unit

    made = chain(fleet)
    assert made['changed'] and made['record'] == {'path': RECORD, 'state': 'written', 'persist': True}
    assert fleet.host_cmd(HOST, 'stat', '-c', '%a', RECORD, '/var/lib/netprobe/records/host').stdout.split() == \
        ['600', '700']
    again = chain(fleet)
    assert not again['changed'] and again['record']['state'] == 'unchanged'

    reboot(fleet)
    rc, summary, log = launcher(fleet, '--trigger', 'boot')
    assert rc == 0, (summary, log)
    assert [(e['interface'], e['probes'], e['attached']) for e in summary['restored']] == \
        [('probe0', ['seen', 'fw', 'passed'], True)], summary
    assert not summary['failed'] and not summary['skipped']
    assert 'netprobe-restore: restored xdp-ingress on probe0 (host)' in log
    assert attached_prog(fleet)
    figure('restore after a reboot, 1 chain of 3 bundled probes: %.1f ms in the launcher (engine part)'
           % (summary['duration_s'] * 1000))

    facts = fleet.facts()[HOST]
    before_seen, before_passed = packets(facts, 'seen'), packets(facts, 'passed')
    udp_flood(fleet, 50)
    assert fleet.ping(HOST, 10).returncode == 0
    facts = fleet.facts()[HOST]
    assert packets(facts, 'seen') - before_seen == 60
    assert packets(facts, 'passed') - before_passed == 10  # the UDP flood to the dropped port was dropped
    persisted = [c for c in facts['chains'] if c['interface'] == 'probe0'][0]['persistence']
    assert persisted['record'] == RECORD and persisted['drift'] == []
    assert persisted['restored']['outcome'] == 'restored' and persisted['restored']['metrics_fresh']
    assert persisted['restored']['trigger'] == 'boot'
    assert facts['restore']['last_run']['restored'] == 1

    after = chain(fleet)  # the playbook's next run has nothing to do
    assert not after['changed'] and after['compiled'] == [] and after['drift'] == [], after
    assert after['record']['state'] == 'unchanged'
    rc, summary, _log = launcher(fleet)  # and a second restore neither
    assert rc == 0 and [e['reason'] for e in summary['unchanged']] == ['already runs the recorded chain']


RCU_EXPEDITED = '/sys/kernel/rcu_expedited'


def rcu_expedited():
    with open(RCU_EXPEDITED) as f:
        return f.read().strip()


def test_the_restore_expedites_grace_periods_only_while_it_attaches(fleet):
    """Each attachment waits for an RCU grace period under the RTNL lock; the restore expedites them (docs/
    persistence.md) and always puts the kernel's setting back, also after a run killed while it held it."""
    assert rcu_expedited() == '0', 'this machine runs with rcu_expedited=1: the test needs the default (0)'
    chain(fleet)
    reboot(fleet)
    rc, summary, log = launcher(fleet, '--trigger', 'boot')
    assert rc == 0 and len(summary['restored']) == 1 and summary['rcu'] == 'expedited', (summary, log)
    assert rcu_expedited() == '0'
    assert fleet.host_cmd(HOST, 'test', '-e', '/run/netprobe/rcu-expedited', check=False).returncode == 1
    # a run SIGKILLed while it held the setting leaves it at 1 with its mark: the next run puts it back
    fleet.host_cmd(HOST, 'sh', '-ec', 'echo 1 > %s; echo 1 > /run/netprobe/rcu-expedited' % RCU_EXPEDITED)
    try:
        rc, summary, _log = launcher(fleet)
        assert rc == 0 and summary['unchanged'], summary
        assert rcu_expedited() == '0'
        assert fleet.host_cmd(HOST, 'test', '-e', '/run/netprobe/rcu-expedited', check=False).returncode == 1
    finally:
        with open(RCU_EXPEDITED, 'w') as f:
            f.write('0')
    # a setting of somebody else's is left as it is
    with open(RCU_EXPEDITED, 'w') as f:
        f.write('1')
    try:
        reboot(fleet)
        rc, summary, _log = launcher(fleet, '--trigger', 'boot')
        assert rc == 0 and summary['restored'] and summary['rcu'] == 'already', summary
        assert rcu_expedited() == '1'
    finally:
        with open(RCU_EXPEDITED, 'w') as f:
            f.write('0')


def test_a_terminated_restore_leaves_through_its_cleanup(fleet):
    """systemd's start timeout and udev's event timeout send SIGTERM: the launcher leaves through its finally
    blocks (exit status 143, not death by the signal), which put the RCU setting back."""
    fleet.host_cmd(HOST, 'sh', '-ec', 'ip netns add npt && ip -n npt link add t0 type veth peer name t1')
    try:
        chain(fleet, {'interface': 't0', 'netns': 'npt', 'probes': [{'name': 'rx', 'probe': 'counter'}]})
        fleet.host_cmd(HOST, 'ip', '-n', 'npt', 'link', 'del', 't0')
        with open(os.path.join(fleet.dir, 'hosts', HOST, 'sshd.pid')) as f:
            pid = f.read().split()[0]
        waiting = subprocess.Popen(['nsenter', '-t', pid, '-m', '-n', '--', LAUNCHER, '--netns', 'npt', '--wait', '30',
                                    '--netns-present', '--trigger', 'netns'], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)   # holding the host lock, waiting for t0
            assert waiting.poll() is None
            sent = time.monotonic()
            waiting.terminate()
            waiting.communicate(timeout=10)
            assert waiting.returncode == 128 + 15 and time.monotonic() - sent < 2
        finally:
            waiting.kill()
        assert rcu_expedited() == '0'
    finally:
        fleet.adhoc(HOST, 'ebpf_chain', {'interface': 't0', 'netns': 'npt', 'state': 'absent'})
        fleet.host_cmd(HOST, 'ip', 'netns', 'del', 'npt', check=False)


def test_a_recreated_interface_gets_its_chain_back_from_the_udev_command(fleet):
    chain(fleet)
    peer = fleet.peer(HOST)
    fleet.host_cmd(HOST, 'ip', 'link', 'del', 'probe0')
    netns_of_host = 'npf%s-%s' % (fleet.tag, HOST)
    subprocess.run(['ip', 'link', 'add', 'probe0', 'netns', netns_of_host, 'type', 'veth', 'peer', 'name', 'eth0',
                    'netns', peer], check=True)
    fleet.host_cmd(HOST, 'sh', '-ec', 'ip addr add 198.18.0.2/24 dev probe0; ip link set probe0 up')
    subprocess.run(['ip', '-n', peer, 'addr', 'add', '198.18.0.1/24', 'dev', 'eth0'], check=True)
    subprocess.run(['ip', '-n', peer, 'link', 'set', 'eth0', 'up'], check=True)
    assert not attached_prog(fleet)
    start = time.monotonic()
    rc, summary, log = launcher(fleet, '--netns', 'host', '--interface', 'probe0', '--trigger', 'udev')
    took = time.monotonic() - start
    assert rc == 0, (summary, log)
    assert [e['interface'] for e in summary['restored']] == ['probe0'], summary
    assert any('recreated' in d for d in summary['restored'][0]['drift']), summary
    assert attached_prog(fleet)
    assert took < 2.0 and summary["duration_s"] < 1.0, took  # the goal is 1 s; CI machines are shared
    figure('interface recreated -> chain back: %.0f ms for the launcher run (Python start included), %.1f ms in the '
           'engine' % (took * 1000, summary['duration_s'] * 1000))
    assert fleet.ping(HOST, 3).returncode == 0
    assert not chain(fleet)['changed']


def test_a_namespace_added_again_gets_its_chains_back_from_the_namespace_watch(fleet):
    """What the /run/netns path unit runs when a namespace appears: its recorded chains come back as soon as the
    interface is moved or created in it (a runtime adds the namespace first, then its veth)."""
    make_ns = 'ip netns add npw && ip -n npw link add w0 type veth peer name w1'
    fleet.host_cmd(HOST, 'sh', '-ec', make_ns)
    try:
        chain(fleet, {'interface': 'w0', 'netns': 'npw', 'probes': [{'name': 'rx', 'probe': 'counter'}]})
        fleet.host_cmd(HOST, 'ip', 'netns', 'del', 'npw')   # the namespace, its veth and its chain are gone
        fleet.host_cmd(HOST, 'ip', 'netns', 'add', 'npw')
        with open(os.path.join(fleet.dir, 'hosts', HOST, 'sshd.pid')) as f:
            pid = f.read().split()[0]
        watch = subprocess.Popen(['nsenter', '-t', pid, '-m', '-n', '--', LAUNCHER, '--netns-present', '--wait', '10',
                                  '--trigger', 'netns'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)   # the launcher waits for w0
            started = time.monotonic()
            fleet.host_cmd(HOST, 'ip', '-n', 'npw', 'link', 'add', 'w0', 'type', 'veth', 'peer', 'name', 'w1')
            out, err = watch.communicate(timeout=60)
            took = time.monotonic() - started
        finally:
            watch.kill()
        summary = json.loads(out)
        assert watch.returncode == 0, (summary, err)
        assert [(e['netns'], e['interface'], e['trigger']) for e in summary['restored']] == [('npw', 'w0', 'netns')]
        assert not summary['failed'] and not summary['skipped'], summary   # other chains' namespaces: not selected
        assert 'prog/xdp' in fleet.host_cmd(HOST, 'ip', '-n', 'npw', '-d', 'link', 'show', 'w0').stdout
        assert took < 5, took
        figure('namespace added, then its veth: chain back %.0f ms after the veth appeared' % (took * 1000))
        # a namespace whose interface never comes: skipped once the wait is over, nothing fails
        fleet.host_cmd(HOST, 'ip', '-n', 'npw', 'link', 'del', 'w0')
        rc, summary, _log = launcher(fleet, '--netns-present', '--wait', '0.5', '--trigger', 'netns')
        assert rc == 0 and 'did not appear' in summary['skipped'][0]['reason'], summary
    finally:
        fleet.adhoc(HOST, 'ebpf_chain', {'interface': 'w0', 'netns': 'npw', 'state': 'absent'})
        fleet.host_cmd(HOST, 'ip', 'netns', 'del', 'npw', check=False)


def test_a_newer_chain_is_never_replaced_and_a_bad_record_is_refused_whole(fleet):
    chain(fleet)
    fleet.host_cmd(HOST, 'cp', RECORD, '/var/lib/netprobe/old-record')
    newer = chain(fleet, probes=FIREWALL[:1])
    assert newer['changed'] and newer['record']['state'] == 'written'
    fleet.host_cmd(HOST, 'cp', '/var/lib/netprobe/old-record', RECORD)  # as if the newer run's record was lost
    facts = fleet.facts()[HOST]
    assert any('differs from its record' in d for d in
               [c for c in facts['chains'] if c['interface'] == 'probe0'][0]['persistence']['drift'])
    rc, summary, _log = launcher(fleet)
    assert rc == 0 and 'a newer chain is there' in summary['skipped'][0]['reason'], summary
    assert [p['name'] for p in chain(fleet, probes=FIREWALL[:1])['chain']['probes']] == ['seen']

    # a second chain on the same interface, then the first record damaged: refused, the other one restored
    egress = ok(fleet.adhoc(HOST, 'ebpf_chain', {'interface': 'probe0', 'hook': 'egress',
                                                 'probes': [{'name': 'out', 'probe': 'counter'}]})[HOST])
    assert egress['record']['state'] == 'written'
    fleet.host_cmd(HOST, 'truncate', '-s', '-100', RECORD)
    reboot(fleet)
    rc, summary, log = launcher(fleet, '--trigger', 'boot')
    assert rc == 1, summary
    assert [e['record'] for e in summary['failed']] == [RECORD]
    assert 'truncated' in summary['failed'][0]['reason'] and 'nothing of it was applied' in summary['failed'][0]['reason']
    assert [(e['mode'], e['hook']) for e in summary['restored']] == [('tc', 'egress')]
    assert not attached_prog(fleet)  # nothing half-applied
    assert 'failed' in log

    # persist: false and state: absent remove the records
    assert chain(fleet, persist=False)['record']['state'] == 'removed'
    facts = fleet.facts()[HOST]
    assert [c for c in facts['chains'] if c['mode'] == 'xdp'][0]['persistence']['persist'] is False
    gone = ok(fleet.adhoc(HOST, 'ebpf_chain', {'interface': 'probe0', 'hook': 'egress', 'state': 'absent'})[HOST])
    assert gone['record']['state'] == 'removed'
    assert fleet.host_cmd(HOST, 'find', '/var/lib/netprobe/records', '-name', '*.json').stdout == ''
    assert chain(fleet, state='absent')['changed']


MGMT = 'eth0'  # the host's management interface: the controller's ssh comes in here
CUT_OFF = {'interface': MGMT, 'probes': [
    {'name': 'no-ssh', 'probe': 'firewall',
     'config': {'rules': [{'name': 'ssh', 'action': 'drop', 'proto': 'tcp', 'dport': 22}]}}]}


def ssh_port_answers(fleet, host, timeout=1.0):
    """A new TCP connection from the controller to the host's sshd (what the next task would need)."""
    address = fleet.host_cmd(host, 'ip', '-4', '-o', 'addr', 'show', 'dev', MGMT).stdout.split()[3].split('/')[0]
    try:
        with socket.create_connection((address, 22), timeout=timeout):
            return True
    except OSError:
        return False


def confirm_view(fleet, interface):
    chains = fleet.facts()[HOST]['chains']
    found = [c for c in chains if c['interface'] == interface and c['mode'] == 'xdp']
    return found[0]['persistence']['confirm'] if found else None, found


def test_a_change_that_cuts_the_controller_off_undoes_itself(fleet):
    """confirm_within: the host reverts a change nobody confirmed, with no controller and no network."""
    try:
        # a kept change first: confirmed in time, it stays, and its record follows it then
        chain(fleet)
        kept = chain(fleet, probes=FIREWALL[:2], confirm_within=5)
        assert kept['changed'] and kept['confirm']['state'] == 'armed' and kept['confirm']['waker'] == 'process'
        assert kept['confirm']['revert_to'] == ['seen', 'fw', 'passed'] and kept['record']['state'] == 'pending'
        assert '"passed"' in fleet.host_cmd(HOST, 'cat', RECORD).stdout  # a reboot now brings back the confirmed one
        confirmed = chain(fleet, {'interface': 'probe0', 'state': 'confirmed'})
        assert confirmed['changed'] and confirmed['confirm']['state'] == 'confirmed'
        assert confirmed['record']['state'] == 'written' and '"passed"' not in fleet.host_cmd(HOST, 'cat', RECORD).stdout
        time.sleep(6)
        assert [p['name'] for p in chain(fleet, probes=FIREWALL[:2])['chain']['probes']] == ['seen', 'fw']
        assert not chain(fleet, {'interface': 'probe0', 'state': 'confirmed'})['changed']

        # a new chain on the management interface that drops the controller's ssh
        assert ssh_port_answers(fleet, HOST)
        start = time.monotonic()
        apply = subprocess.Popen(  # its own result cannot come back until the host undid the change
            [os.path.join(BIN, 'ansible'), '-i', fleet.inventory, HOST, '-m', 'netprobe.ebpf.ebpf_chain',
             '-a', json.dumps(dict(CUT_OFF, confirm_within=8))], cwd=REPO, env=ansible_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        blocked_at = None
        while time.monotonic() - start < 20 and blocked_at is None:
            if fleet.host_cmd(HOST, 'ip', '-j', 'link', 'show', MGMT).stdout.find('"xdp"') >= 0:
                blocked_at = time.monotonic()
            time.sleep(0.2)
        assert blocked_at is not None, 'the chain never came up on %s' % MGMT
        assert not ssh_port_answers(fleet, HOST), 'the chain was meant to cut the controller off'
        while not ssh_port_answers(fleet, HOST, 0.5):  # nothing from here reaches the host until it reverts
            assert time.monotonic() - blocked_at < 30, 'the host did not revert the unconfirmed change'
            time.sleep(0.5)
        back = time.monotonic() - blocked_at
        out, err = apply.communicate(timeout=120)
        # its result came back once the host reverted (TCP retransmits), or the connection was given up
        assert re.search(r'^%s \| (CHANGED|UNREACHABLE)' % HOST, out, re.M), out + err
        figure('an unconfirmed change that cut ssh off (confirm_within 8 s): the host reachable again %.1f s after '
               'the chain came up' % back)
        assert 6 <= back <= 20, back
        facts = fleet.facts()[HOST]  # the next task reaches the host
        assert not [c for c in facts['chains'] if c['interface'] == MGMT], 'the new chain was removed'
        assert facts['restore']['last_run']['trigger'] == 'revert'
        refused = fleet.adhoc(HOST, 'ebpf_chain', {'interface': MGMT, 'state': 'confirmed'})[HOST]
        assert refused['_status'] == 'FAILED' and 'was not confirmed within 8 s' in refused['msg'], refused
        assert 'no chain' in refused['msg'], refused

        # a change of an existing chain, not confirmed: back to the chain it ran before, its record untouched
        before = fleet.host_cmd(HOST, 'cat', RECORD).stdout
        changed = chain(fleet, probes=FIREWALL[:1], confirm_within=5)
        assert changed['confirm']['revert_to'] == ['seen', 'fw']
        again = chain(fleet, probes=FIREWALL[:1], confirm_within=5)  # the same again: a new deadline
        assert not again['changed'] and again['confirm']['state'] == 'extended'
        view, _found = confirm_view(fleet, 'probe0')
        assert view['state'] == 'pending' and view['revert_to'] == ['seen', 'fw']
        time.sleep(7)
        view, found = confirm_view(fleet, 'probe0')
        assert [p['name'] for p in found[0]['probes']] == ['seen', 'fw'] and view['state'] == 'reverted', found
        assert found[0]['persistence']['drift'] == [] and fleet.host_cmd(HOST, 'cat', RECORD).stdout == before
        out = chain(fleet, probes=FIREWALL[:2])  # rerun of the confirmed declaration: nothing to do
        assert not out['changed'] and out['compiled'] == []
    finally:
        fleet.host_cmd(HOST, 'pkill', '-f', 'netprobe-restore --revert', check=False)
        fleet.adhoc(HOST, 'ebpf_chain', {'interface': MGMT, 'state': 'absent'})


def test_the_confirm_example_of_the_docs_runs_as_written(fleet):
    """docs/persistence.md's confirm_within example, task by task on the host (its eth0 is the management link)."""
    text = open(os.path.join(REPO, 'docs', 'persistence.md')).read()
    block = text.split('## A change that cuts the controller off')[1].split('```yaml\n')[1].split('```')[0]
    tasks = yaml.safe_load(block)
    try:
        results = []
        for task in tasks:
            (module, args), = [(k, v) for k, v in task.items() if k != 'name']
            assert module == 'netprobe.ebpf.ebpf_chain'
            results.append(ok(fleet.adhoc(HOST, 'ebpf_chain', args)[HOST]))
        assert results[0]['changed'] and results[0]['confirm']['state'] == 'armed'
        assert results[0]['confirm']['within'] == 60 and results[0]['confirm']['revert_to'] == []
        assert results[1]['changed'] and results[1]['confirm']['state'] == 'confirmed'
        assert results[1]['record']['state'] == 'written'
    finally:
        fleet.adhoc(HOST, 'ebpf_chain', {'interface': MGMT, 'state': 'absent'})
