# -*- coding: utf-8 -*-
"""The fleet lab (tools/fleet.sh): simulated hosts reached by Ansible over real ssh, real chains, real traffic.

deploy.yml, gather.yml and fleet_report.yml run against the generated inventory unchanged; each simulated
host counts its own traffic in its own chain (own network namespace, own bpffs, own /run/netprobe);
rollout.yml puts a bad chain on the canary, which fails the health gate and returns to its previous chain
while no other host is touched, then a good chain goes to every host, batch by batch.

NETPROBE_FLEET_HOSTS (default 4, at least 3) sets the fleet size; the 8-host case: NETPROBE_FLEET_HOSTS=8.
"""

import json
import os
import re
import subprocess
import time

import pytest
import yaml

from fleet import Fleet
from lab import BIN, REPO, ansible_env, run_tree

HOSTS = int(os.environ.get('NETPROBE_FLEET_HOSTS', '4'))
SEEN = {'name': 'seen', 'probe': 'counter'}
PASSED = {'name': 'passed', 'probe': 'counter'}
DROP_ICMP = {'name': 'no-icmp', 'source': '#include "netprobe.h"\nNP_PROBE(ctx)\n{\n    struct np_packet pkt;\n'
             '    np_parse(ctx, &pkt);\n    return pkt.l4_proto == IPPROTO_ICMP ? NP_DROP : NP_PASS;\n}\n'}
GATE = {'wait': 2, 'moving': ['seen', 'passed'], 'drop_ratio': {'before': 'seen', 'after': 'passed', 'max': 0.05}}
CHAIN_KEY = ('host', 'probe0', 'xdp', 'ingress')
EGRESS_KEY = ('host', 'probe0', 'tc', 'egress')
ROLLOUT_DOC = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'rollout.md')


def chain_of(netprobe, key=CHAIN_KEY):
    for c in netprobe['chains']:
        if (c['netns'], c['interface'], c['mode'], c['hook']) == key:
            return c
    return None


def packets(netprobe, probe, key=CHAIN_KEY):
    return sum(e['value']['packets'] for m in netprobe['metrics']
               if (m['netns'], m['interface'], m['mode'], m['hook']) == key and m['probe'] == probe
               for e in m['entries'])


def probes_of(netprobe, key=CHAIN_KEY):
    return [(p['name'], p['position'], p['prog_id']) for p in chain_of(netprobe, key)['probes']]


def rollout_doc_example():
    """docs/rollout.md's "Example to copy": its variables file and the -e options of its command."""
    text = open(ROLLOUT_DOC).read().split('## Example to copy', 1)[1]
    variables = yaml.safe_load(re.search(r'```yaml\n(.*?)```', text, re.S).group(1))
    command = re.search(r'```sh\n(.*?)```', text, re.S).group(1)
    return variables, command


def task_hosts(output, task):
    """Hosts that ran `task`, one list per time the task header appears (one per serial batch)."""
    out = []
    for chunk in output.split('TASK [%s]' % task)[1:]:
        chunk = chunk.split('\nTASK [')[0]
        out.append(sorted(set(re.findall(r'^(?:ok|changed|failed|fatal): \[(h\d+)\]', chunk, re.M))))
    return out


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    assert HOSTS >= 3, 'the fleet tests need at least 3 hosts (canary + two batches)'
    fleet = Fleet(tmp_path_factory.mktemp('fleet'), HOSTS)
    try:
        yield fleet
    finally:
        down = fleet.down()
        assert down.returncode == 0, down.stderr
        leftover = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, check=True).stdout
        assert 'npf%s-' % fleet.tag not in leftover
        assert not os.path.exists(fleet.dir)


@pytest.mark.timeout(2400)
def test_fleet_deploy_rerun_traffic_gather_report(fleet, tmp_path):
    rc, recap, out = fleet.playbook('playbooks/deploy.yml')
    assert rc == 0, out[-4000:]
    assert sorted(recap) == fleet.hosts and all(r['failed'] == 0 and r['unreachable'] == 0 for r in recap.values())

    rc, recap, out = fleet.playbook('playbooks/deploy.yml')
    assert rc == 0, out[-4000:]
    assert dict((h, r['changed']) for h, r in recap.items()) == dict((h, 0) for h in fleet.hosts), out[-4000:]

    # Each host's own chain counts its own traffic: a different number of pings per host.
    before = fleet.facts()
    netns_ids = set(chain_of(before[h])['netns_id'] for h in fleet.hosts)
    assert len(netns_ids) == len(fleet.hosts)  # one network namespace per host
    for i, h in enumerate(fleet.hosts):
        fleet.ping(h, 3 + i)
    after = fleet.facts()
    for i, h in enumerate(fleet.hosts):
        assert chain_of(after[h])['attached'] and not chain_of(after[h])['drift']
        assert packets(after[h], 'seen') - packets(before[h], 'seen') == 3 + i, h

    rc, recap, out = fleet.playbook('playbooks/gather.yml')
    assert rc == 0 and sorted(recap) == fleet.hosts, out[-4000:]
    for h in fleet.hosts:
        assert 'chain probe0 in host, xdp-ingress: seen (attached)' in out

    report = tmp_path / 'report'
    rc, recap, out = fleet.playbook('playbooks/fleet_report.yml', {'fleet_report_dir': str(report)})
    assert rc == 0, out[-4000:]
    read = fleet.facts()  # no traffic since the report: the same counters
    assert 'chart: %s' % (report / 'fleet-report.png') in out
    png = (report / 'fleet-report.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and png[12:16] == b'IHDR'
    width, height = int.from_bytes(png[16:20], 'big'), int.from_bytes(png[20:24], 'big')
    assert width >= 600 and height >= 600
    table = json.loads((report / 'fleet-report.json').read_text())
    rows = dict(((r['host'], r['probe']), r) for r in table['probes'])
    assert sorted(h for h, _p in rows) == fleet.hosts
    for h in fleet.hosts:
        assert rows[(h, 'seen')]['packets'] == packets(read[h], 'seen'), h
        assert re.search(r'^%s\s+host/probe0 xdp-ingress\s+0\s+seen\s+\d+\s+%d\s' % (h, packets(read[h], 'seen')),
                         (report / 'fleet-report.txt').read_text(), re.M), h


@pytest.mark.timeout(2400)
def test_fleet_rollout_canary_fails_gate_and_rolls_back(fleet):
    ready = fleet.adhoc('fleet', 'ebpf_chain', {'interface': 'probe0', 'probes': [SEEN], 'purge': True})
    assert all(r['_status'] in ('SUCCESS', 'CHANGED') for r in ready.values()), ready
    before = fleet.facts()
    canary, others = fleet.hosts[0], fleet.hosts[1:]
    with fleet.flowing():
        rc, recap, out = fleet.playbook('playbooks/rollout.yml', {
            'rollout_chains': [{'interface': 'probe0', 'probes': [SEEN, DROP_ICMP, PASSED]}],
            'rollout_gate': GATE, 'rollout_serial': [1]})
        assert rc != 0
        assert 'health gate failed' in out and 'drop ratio 1.0 between seen and passed' in out, out[-4000:]
        assert 'the rollout stops here' in out
        assert sorted(recap) == [canary] and recap[canary]['rescued'] == 1, out[-4000:]
        assert task_hosts(out, 'Apply the new chains') == [[canary]]
        time.sleep(1)
        after = fleet.facts()
    # the canary is back on its previous chain: same probes, same positions, same programs, traffic passing
    assert probes_of(after[canary]) == probes_of(before[canary]) == [('seen', 0, probes_of(before[canary])[0][2])]
    assert chain_of(after[canary])['attached'] and not chain_of(after[canary])['drift']
    assert fleet.ping(canary, 5).returncode == 0
    # nobody else was touched: same programs, their histories still say only that the chain was new
    for h in others:
        assert probes_of(after[h]) == probes_of(before[h]), h
    untouched = fleet.adhoc('fleet', 'ebpf_chain', {'interface': 'probe0', 'probes': [SEEN], 'purge': True}, check=True)
    for h in others:
        assert untouched[h]['changed'] is False and untouched[h]['previous']['probes'] == [], h
    would = fleet.adhoc(others[0], 'ebpf_chain', {'interface': 'probe0', 'rollback': True}, check=True)[others[0]]
    assert would['changed'] is True and would['chain']['probes'] == [], would  # its rollback would remove it
    # the canary's rollback point is still the chain it returned to (a rollback records nothing)
    assert [p['name'] for p in untouched[canary]['previous']['probes']] == ['seen']


@pytest.mark.timeout(2400)
def test_fleet_rollout_canary_over_its_cost_budget_rolls_back(fleet):
    """The gate's max_ns_per_packet: a canary whose new chain costs more per packet (the kernel's run time on
    the live pings) than the budget returns to its previous chain, and nobody else is touched."""
    ready = fleet.adhoc('fleet', 'ebpf_chain', {'interface': 'probe0', 'probes': [SEEN], 'purge': True})
    assert all(r['_status'] in ('SUCCESS', 'CHANGED') for r in ready.values()), ready
    before = fleet.facts()
    canary = fleet.hosts[0]
    with fleet.flowing():
        rc, recap, out = fleet.playbook('playbooks/rollout.yml', {
            'rollout_chains': [{'interface': 'probe0', 'probes': [SEEN, PASSED]}],
            'rollout_gate': {'wait': 2, 'max_ns_per_packet': 1}, 'rollout_serial': [1]})
        after = fleet.facts()
    assert rc != 0
    assert re.search(r'health gate failed: .*host\|probe0\|xdp-ingress: [0-9.]+ ns per packet over [0-9]+ packets '
                     r'\(at most 1 allowed\)', out), out[-4000:]
    assert sorted(recap) == [canary] and recap[canary]['rescued'] == 1, out[-4000:]
    for h in fleet.hosts:
        assert probes_of(after[h]) == probes_of(before[h]), h


@pytest.mark.timeout(2400)
def test_fleet_rollout_passes_batch_by_batch(fleet):
    with fleet.flowing():
        rc, recap, out = fleet.playbook('playbooks/rollout.yml', {
            'rollout_chains': [{'interface': 'probe0', 'probes': [SEEN, PASSED]}],
            'rollout_gate': GATE, 'rollout_serial': [1, 2]})
        after = fleet.facts()
    assert rc == 0, out[-4000:]
    assert 'health gate passed' in out
    rest = fleet.hosts[1:]
    assert task_hosts(out, 'Apply the new chains') == [[fleet.hosts[0]], rest[:1]] + [
        rest[i:i + 2] for i in range(1, len(rest), 2)]
    for h in fleet.hosts:
        assert [p[0] for p in probes_of(after[h])] == ['seen', 'passed'], h
        assert chain_of(after[h])['attached'] and not chain_of(after[h])['drift']
    # ... and a rollback from there returns every host to the counter alone, keeping its program
    back = fleet.adhoc('fleet', 'ebpf_chain', {'interface': 'probe0', 'rollback': True})
    for h in fleet.hosts:
        assert back[h]['changed'] is True and [p['name'] for p in back[h]['chain']['probes']] == ['seen'], h
        assert back[h]['chain']['probes'][0]['prog_id'] == probes_of(after[h])[0][2]


@pytest.mark.timeout(2400)
def test_fleet_first_rollout_rolls_back_to_no_chain(fleet):
    """A canary whose chain is its first on that hook fails the gate: the rollback removes the chain, the
    rollout stops, and nobody else gets a chain."""
    before = fleet.facts()
    assert all(chain_of(before[h], EGRESS_KEY) is None for h in fleet.hosts)
    canary, others = fleet.hosts[0], fleet.hosts[1:]
    with fleet.flowing():
        rc, recap, out = fleet.playbook('playbooks/rollout.yml', {
            'rollout_chains': [{'interface': 'probe0', 'hook': 'egress', 'probes': [SEEN, DROP_ICMP, PASSED]}],
            'rollout_gate': GATE, 'rollout_serial': [1]})
        after = fleet.facts()
    assert rc != 0
    assert 'health gate failed' in out and 'drop ratio 1.0 between seen and passed' in out, out[-4000:]
    assert 'probe0 egress: removed, it was new); the rollout stops here' in out, out[-4000:]
    assert sorted(recap) == [canary] and recap[canary]['rescued'] == 1, out[-4000:]
    for h in fleet.hosts:
        assert chain_of(after[h], EGRESS_KEY) is None, h          # the canary's is gone, the others never had one
        assert probes_of(after[h]) == probes_of(before[h]), h     # the ingress chain was not touched
    assert fleet.ping(canary, 5).returncode == 0
    again = fleet.adhoc(canary, 'ebpf_chain', {'interface': 'probe0', 'hook': 'egress', 'rollback': True})[canary]
    assert again['_status'] == 'SUCCESS' and again['changed'] is False and again['previous']['probes'] == [], again


@pytest.mark.timeout(2400)
def test_fleet_rollout_docs_example_runs_as_written(fleet):
    """docs/rollout.md's example, as written but for the interface (the fleet lab probes probe0, the
    example eth1) and the host group (the lab's is fleet, the example's web)."""
    variables, command = rollout_doc_example()
    assert '-e @new-chain.yml' in command and '-e rollout_hosts=web' in command
    serial = json.loads(re.search(r"-e '(\{\"rollout_serial\".*?\})'", command).group(1))
    for chain in variables['rollout_chains']:
        assert chain['interface'] == 'eth1'
        chain['interface'] = 'probe0'
    with fleet.flowing():
        rc, recap, out = fleet.playbook('playbooks/rollout.yml', dict(variables, rollout_hosts='fleet', **serial))
        after = fleet.facts()
    assert rc == 0, out[-4000:]
    assert out.count('health gate passed') >= 1 and 'health gate failed' not in out
    assert re.search(r'host\|probe0\|xdp-ingress: [0-9.]+ ns per packet over [0-9]+ packets \(at most 20000 allowed\)',
                     out), out[-4000:]
    rest = fleet.hosts[1:]
    assert task_hosts(out, 'Apply the new chains') == [[fleet.hosts[0]], rest[:2]] + [
        rest[i:i + 1] for i in range(2, len(rest))]
    want = [p['name'] for p in variables['rollout_chains'][0]['probes']]
    for h in fleet.hosts:
        assert [p[0] for p in probes_of(after[h])] == want, h
        ddos = [p for p in chain_of(after[h])['probes'] if p['name'] == 'ddos'][0]
        assert ddos['config'] == {'auto_block': {'threshold_pps': 50000, 'hold_time': 60}}, h


def galaxy(args, cwd, env):
    proc = run_tree([os.path.join(BIN, 'ansible-galaxy')] + args, cwd=str(cwd), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.timeout(900)
def test_fleet_runs_the_collection_installed_from_its_artefact_and_from_git(fleet, tmp_path):
    """README's "Install": build, install into an empty path from the file and from git through the docs'
    collections/requirements.yml, then run a playbook by FQCN from a directory outside the checkout, with
    none of the checkout's ansible.cfg."""
    fleet.adhoc('fleet', 'ebpf_chain', {'interface': 'probe0', 'probes': [SEEN], 'purge': True})
    project = tmp_path / 'project'
    (project / 'collections').mkdir(parents=True)
    env = dict(ansible_env(), ANSIBLE_HOME=str(tmp_path / 'ansible-home'))
    env.pop('ANSIBLE_CONFIG')
    env.pop('ANSIBLE_COLLECTIONS_PATH', None)
    version = yaml.safe_load(open(os.path.join(REPO, 'galaxy.yml')))['version']
    galaxy(['collection', 'build', REPO, '--output-path', str(project)], project, env)
    assert (project / ('netprobe-ebpf-%s.tar.gz' % version)).is_file()

    from_file = open(os.path.join(REPO, 'docs/install/requirements.yml')).read()  # as written
    assert './netprobe-ebpf-%s.tar.gz' % version in from_file, 'docs/install/requirements.yml names another version'
    (project / 'collections' / 'requirements.yml').write_text(from_file)
    from_git = open(os.path.join(REPO, 'docs/install/requirements-git.yml')).read()
    url = re.search(r'name: (\S+)', from_git).group(1)
    (tmp_path / 'requirements-git.yml').write_text(from_git.replace(url, 'file://' + REPO).replace(
        'version: main', 'version: HEAD'))  # the checkout's own git history stands in for the mirror

    for paths, requirements in (('file', 'collections/requirements.yml'),
                                ('git', str(tmp_path / 'requirements-git.yml'))):
        target = tmp_path / paths
        galaxy(['collection', 'install', '-r', requirements, '-p', str(target)], project, env)
        manifest = json.loads((target / 'ansible_collections/netprobe/ebpf/MANIFEST.json').read_text())
        assert manifest['collection_info']['version'] == version
        run_env = dict(env, ANSIBLE_COLLECTIONS_PATH=str(target))
        proc = run_tree([os.path.join(BIN, 'ansible-playbook'), '-i', fleet.inventory, 'netprobe.ebpf.gather'],
                        cwd=str(project), env=run_env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert 'chain probe0 in host, xdp-ingress:' in proc.stdout, proc.stdout[-3000:]
        assert str(target) in run_tree([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'list', 'netprobe.ebpf'],
                                       cwd=str(project), env=run_env).stdout


def test_execution_environment_dependencies_are_what_ansible_builder_finds(tmp_path):
    """ansible-builder's introspection (what it puts in an EE) reads meta/execution-environment.yml."""
    root = tmp_path / 'ansible_collections' / 'netprobe'
    root.mkdir(parents=True)
    os.symlink(REPO, str(root / 'ebpf'))
    proc = run_tree([os.path.join(BIN, 'ansible-builder'), 'introspect', '--sanitize', str(tmp_path)],
                    cwd=str(tmp_path), env=ansible_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = yaml.safe_load(proc.stdout)
    assert any(line.startswith('matplotlib') for line in found['python']), found
    assert 'openssh-client [platform:dpkg]' in ' '.join(found['system']), found


@pytest.mark.timeout(2400)
def test_fleet_rollout_of_a_chain_that_cuts_the_canary_off(fleet):
    """The canary's new chain drops the controller's ssh: nobody can roll it back, so the canary does it itself
    (confirm_within), and the rollout stops before anybody else gets the chain."""
    canary = fleet.hosts[0]
    cut_off = {'interface': 'eth0', 'probes': [{'name': 'no-ssh', 'probe': 'firewall', 'config': {
        'rules': [{'name': 'ssh', 'action': 'drop', 'proto': 'tcp', 'dport': 22}]}}]}
    start = time.monotonic()
    rc, recap, out = fleet.playbook('playbooks/rollout.yml', {
        'rollout_chains': [cut_off], 'rollout_gate': {'wait': 1}, 'rollout_serial': [1],
        'rollout_confirm_within': 8})
    took = time.monotonic() - start
    assert rc != 0 and sorted(recap) == [canary], out[-4000:]
    assert task_hosts(out, 'Apply the new chains') == [[canary]], out[-4000:]
    assert task_hosts(out, 'Keep the new chains (without this, each host reverts them at rollout_confirm_within)') \
        == [], out[-4000:]
    after = fleet.facts()  # everybody answers: the canary returned to no chain on eth0 by itself
    for h in fleet.hosts:
        assert chain_of(after[h], ('host', 'eth0', 'xdp', 'ingress')) is None, h
    assert after[canary]['restore']['last_run']['trigger'] == 'revert'
    assert 'not confirmed within 8 s' in after[canary]['restore']['chains']['host/eth0/xdp-ingress']['reason']
    print('rollout of a cut-off chain: the playbook ended after %.1f s' % took)
