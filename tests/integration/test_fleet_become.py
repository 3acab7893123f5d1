# -*- coding: utf-8 -*-
"""The fleet lab reached as a real fleet is: an unprivileged ssh login (npfleet) that becomes root with sudo.

tools/fleet.sh up with FLEET_LOGIN=become; the hosts' connection settings are docs/inventory-example/
group_vars/netprobe.yml as written. deploy.yml, gather.yml, gadget.yml, rollout.yml and remove.yml run there
and really attach, count, gate and remove; every module run without become fails with a message that says to
use become and changes nothing; the playbooks that change hosts refuse to run without a host pattern.
"""

import json
import os
import subprocess
import time

import pytest

from fleet import Fleet
from lab import BIN, REPO, ansible_env, run_tree
from test_fleet import GATE, PASSED, SEEN, chain_of, packets, probes_of

HOSTS = 2
EXAMPLE = os.path.join(REPO, 'docs/inventory-example')
NEEDS_ROOT = 'needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for bpffs)'


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    fleet = Fleet(tmp_path_factory.mktemp('fleet-become'), HOSTS, login='become')
    try:
        yield fleet
    finally:
        down = fleet.down()
        assert down.returncode == 0, down.stderr
        leftover = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, check=True).stdout
        assert 'npf%s-' % fleet.tag not in leftover
        assert not os.path.exists(fleet.dir)
        assert not os.path.exists('/run/netprobe-fleet/%s' % fleet.tag)


def inventory_host(inventory, host):
    out = subprocess.run([os.path.join(BIN, 'ansible-inventory'), '-i', inventory, '--host', host],
                         capture_output=True, text=True, env=ansible_env(), cwd=REPO, check=True).stdout
    return json.loads(out)


def xdp_attached(fleet, host):
    link = subprocess.run(['ip', '-n', 'npf%s-%s' % (fleet.tag, host), '-d', 'link', 'show', 'probe0'],
                          capture_output=True, text=True, check=True).stdout
    return 'prog/xdp' in link


def test_become_example_inventory_is_what_the_lab_uses(fleet):
    # the docs' example, as a reader would use it
    web = inventory_host(os.path.join(EXAMPLE, 'inventory.ini'), 'web-01.example.com')
    assert (web['ansible_user'], web['ansible_become'], web['ansible_pipelining']) == ('npfleet', True, True)
    assert web['ansible_python_interpreter'] == 'auto_silent'
    # the lab's inventory takes that very file; only the interpreter is the lab's (a host variable)
    assert os.path.realpath(os.path.join(fleet.dir, 'group_vars/netprobe.yml')) == os.path.join(
        EXAMPLE, 'group_vars/netprobe.yml')
    h01 = inventory_host(fleet.inventory, 'h01')
    assert (h01['ansible_user'], h01['ansible_become'], h01['ansible_pipelining']) == ('npfleet', True, True)
    assert h01['ansible_python_interpreter'] != 'auto_silent'
    who = fleet.adhoc('fleet', 'ebpf_facts', {'gather_subset': ['chains']})
    assert sorted(who) == fleet.hosts and all(r['_status'] == 'SUCCESS' for r in who.values()), who


@pytest.mark.parametrize('playbook,variable', [('deploy.yml', 'netprobe_hosts'), ('remove.yml', 'netprobe_hosts'),
                                               ('rollout.yml', 'rollout_hosts'), ('gadget.yml', 'gadget_hosts')])
def test_become_changing_playbooks_need_a_host_pattern(fleet, playbook, variable):
    extra = {'rollout_chains': [{'interface': 'probe0', 'probes': [SEEN]}]} if playbook == 'rollout.yml' else {}
    proc = run_tree([os.path.join(BIN, 'ansible-playbook'), '-i', fleet.inventory, 'playbooks/' + playbook,
                     '-e', json.dumps(extra)], cwd=REPO, env=ansible_env())
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert '%s is not set: give the hosts to' % variable in out and 'this playbook has no default' in out, out[-3000:]
    assert 'TASK [' not in proc.stdout  # refused before any task, the canary play's included
    assert all(chain_of(f) is None for f in fleet.facts().values())


@pytest.mark.timeout(900)
def test_become_deploy_gather_gadget_rollout_remove(fleet, tmp_path):
    rc, recap, out = fleet.playbook('playbooks/deploy.yml')
    assert rc == 0 and sorted(recap) == fleet.hosts, out[-4000:]
    assert all(r['failed'] == 0 and r['unreachable'] == 0 for r in recap.values())
    before = fleet.facts()
    for i, h in enumerate(fleet.hosts):
        assert chain_of(before[h])['attached'] and not chain_of(before[h])['drift'], h
        assert xdp_attached(fleet, h)
        fleet.ping(h, 3 + i)
    after = fleet.facts()
    for i, h in enumerate(fleet.hosts):
        assert packets(after[h], 'seen') - packets(before[h], 'seen') == 3 + i, h

    rc, recap, out = fleet.playbook('playbooks/gather.yml')
    assert rc == 0 and sorted(recap) == fleet.hosts, out[-4000:]
    assert out.count('chain probe0 in host, xdp-ingress: seen (attached)') == len(fleet.hosts), out[-4000:]

    # with traffic from each peer: a BPF gadget as root on every host (its JSON written on the controller,
    # become: false there), then the rollout, gated on that traffic
    rows_file = tmp_path / 'rows.json'
    with fleet.flowing():
        rc, recap, out = fleet.playbook('playbooks/gadget.yml', {
            'gadget': 'top_talkers', 'gadget_duration': 2, 'gadget_interfaces': ['probe0'],
            'gadget_filter': ['proto == icmp'], 'gadget_fields': ['direction', 'saddr', 'daddr', 'packets'],
            'gadget_json': str(rows_file)})
        assert rc == 0, out[-4000:]
        rc, recap, out = fleet.playbook('playbooks/rollout.yml', {
            'rollout_chains': [{'interface': 'probe0', 'probes': [SEEN, PASSED]}],
            'rollout_gate': GATE, 'rollout_serial': [1]})
        rolled = fleet.facts()
    rows = json.loads(rows_file.read_text())
    for h in fleet.hosts:  # each host's own kernel counted the pings its peer sent (50 a second; how many
        # fall into a host's 2 s window depends on when its gadget started, so only that it saw them is checked)
        pings = [r for r in rows if r['host'] == h and (r['saddr'], r['daddr']) == ('198.18.0.1', '198.18.0.2')]
        assert len(pings) == 1 and pings[0]['packets'] >= 1, (h, rows)
    assert rc == 0 and 'health gate passed' in out, out[-4000:]
    for h in fleet.hosts:
        assert [p[0] for p in probes_of(rolled[h])] == ['seen', 'passed'], h
        assert probes_of(rolled[h])[0][2] == probes_of(after[h])[0][2]  # the counter kept its program
        assert packets(rolled[h], 'passed') > 0, h

    rc, recap, out = fleet.playbook('playbooks/remove.yml')
    assert rc == 0 and all(r['failed'] == 0 for r in recap.values()), out[-4000:]
    gone = fleet.facts()
    for h in fleet.hosts:
        assert gone[h]['chains'] == [], h
        assert not xdp_attached(fleet, h)
    rc, recap, out = fleet.playbook('playbooks/remove.yml')
    assert rc == 0 and all(r['changed'] == 0 for r in recap.values()), out[-4000:]


@pytest.mark.timeout(600)
def test_become_every_module_without_become_fails_saying_so(fleet):
    ready = fleet.adhoc('fleet', 'ebpf_chain', {'interface': 'probe0', 'probes': [SEEN], 'purge': True})
    assert all(r['_status'] in ('SUCCESS', 'CHANGED') for r in ready.values()), ready
    before = fleet.facts()
    unprivileged = {'ansible_become': False}
    cases = [
        ('ebpf_chain', {'interface': 'probe0', 'probes': [SEEN, PASSED]}, False),
        ('ebpf_chain', {'interface': 'probe0', 'probes': [SEEN, PASSED]}, True),  # check mode too
        ('ebpf_chain', {'interface': 'probe0', 'state': 'absent'}, False),
        ('ebpf_probe', {'interface': 'probe0', 'name': 'passed', 'probe': 'counter'}, False),
        ('ebpf_facts', {'gather_subset': ['chains']}, False),
        ('ebpf_metrics_info', {'consume': True}, False),
        ('ebpf_gadget', {'gadget': 'snapshot_socket', 'duration': 1}, False),
        ('ebpf_gadget', {'gadget': 'snapshot_socket', 'duration': 1}, True),
    ]
    for module, args, check in cases:
        results = fleet.adhoc('fleet', module, args, check=check, extra_vars=unprivileged)
        for h in fleet.hosts:
            r = results[h]
            assert r['_status'] == 'FAILED', (module, check, h, r)
            assert r['msg'].startswith('netprobe.ebpf.%s %s' % (module, NEEDS_ROOT)), (module, r['msg'])
            assert 'runs as npfleet' in r['msg'] and '`become: true`' in r['msg'], r['msg']
            assert 'exception' not in r and 'module_stderr' not in r, r
    time.sleep(0.5)
    after = fleet.facts()  # nothing changed: same programs, same counters
    for h in fleet.hosts:
        assert probes_of(after[h]) == probes_of(before[h]), h
        assert packets(after[h], 'seen') == packets(before[h], 'seen'), h
    gone = fleet.adhoc('fleet', 'ebpf_chain', {'interface': 'probe0', 'state': 'absent'})
    assert all(r['_status'] == 'CHANGED' for r in gone.values()), gone
