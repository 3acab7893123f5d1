# -*- coding: utf-8 -*-
"""Chains that outlive the host (docs/persistence.md), on a host of the fleet lab, over ssh.

A "reboot" here is what one leaves behind: the host's bpffs and /run/netprobe are unmounted and mounted fresh
inside its mount namespace and the XDP attachment is removed; the bytecode cache goes too. Then the launcher
that ebpf_restore installed runs as the boot unit would. No systemd or udevd here (DESIGN.md section 12): the
unit and the rule are proven in the kernel matrix; the command they run is proven here.
"""

import json
import subprocess
import time

import pytest

from fleet import Fleet
from lab import figure

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
