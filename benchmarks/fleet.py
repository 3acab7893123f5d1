# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet figures: playbooks over real ssh against the fleet lab (tools/fleet.sh), 1 to 32 simulated hosts.

For each fleet size N and each --forks value, a fresh fleet (nothing on its hosts yet), then:
  first deploy      ansible-playbook playbooks/deploy.yml (prereqs role + chain role, one counter per host)
  unchanged rerun   the same again (must be changed=0 on every host)
  gather            playbooks/gather.yml
  one task          interleaved --rounds times: a one-task playbook with the unchanged ebpf_chain, and one with
                    ansible.builtin.stat (path /etc/hostname), each with and without pipelining
Wall time and the controller's CPU seconds of each ansible-playbook process; per-task, per-host durations from
the junit callback; bytes
sent to and received from each host on its management link (kernel counters of its veth: ssh traffic,
compressed as Ansible's ssh sends it).

With --breakdown, on a 1-host fleet: where one task's time goes. ssh with a fresh connection and over a
ControlPersist master; the AnsiballZ payloads (kept with ANSIBLE_KEEP_REMOTE_FILES) and their size, module
code and arguments apart; the payload copied over the master; the payload run directly on the host.

Writes --json (all figures) as it goes. Everything it creates is removed at the end, also on failure.
Run as root after make setup: .venv/bin/python benchmarks/fleet.py [--hosts 1 8 16 32] [--forks 8 32]
"""

import argparse
import glob
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from fleet import Fleet  # noqa: E402  pylint: disable=wrong-import-position

CHAIN_TASK = '''---
- name: One unchanged chain per host
  hosts: fleet
  gather_facts: false
  tasks:
    - name: Chain
      netprobe.ebpf.ebpf_chain:
        interface: probe0
        probes: [{name: seen, probe: counter}]
      register: r
      failed_when: r.changed
'''
FIRST_TASK = CHAIN_TASK.replace('One unchanged chain per host', 'First chain per host').replace(
    '      failed_when: r.changed\n', '      failed_when: not r.changed\n')
STAT_TASK = '''---
- name: One stat per host
  hosts: fleet
  gather_facts: false
  tasks:
    - name: Stat
      ansible.builtin.stat:
        path: /etc/hostname
'''


def wire(fleet):
    """{host: (bytes to the host, bytes from the host)} so far, from its management veth's counters."""
    out = {}
    for h in fleet.hosts:
        base = '/sys/class/net/%s/statistics/' % fleet.mgmt_link(h)
        with open(base + 'tx_bytes') as tx, open(base + 'rx_bytes') as rx:
            out[h] = (int(tx.read()), int(rx.read()))
    return out


def junit_times(directory):
    """{task name: [seconds per host]} from the junit callback's files in directory (then emptied)."""
    times = {}
    for path in glob.glob(os.path.join(directory, '*.xml')):
        for case in ET.parse(path).getroot().iter('testcase'):
            name = re.sub(r'^\[[^\]]*\] ', '', case.get('name', ''))
            name = re.sub(r'^[^:]*: ', '', name, count=1)
            times.setdefault(name, []).append(float(case.get('time') or 0))
        os.unlink(path)
    return times


def run(fleet, playbook, forks, junit_dir, extra_env=None, check_unchanged=False):
    before = wire(fleet)
    env = dict(ANSIBLE_CALLBACKS_ENABLED='ansible.builtin.junit', JUNIT_OUTPUT_DIR=junit_dir,
               JUNIT_TASK_CLASS='true', **(extra_env or {}))
    start, cpu_before = time.monotonic(), controller_cpu()
    rc, recap, out = fleet.playbook(playbook, forks=forks, env=env)
    wall, cpu = time.monotonic() - start, controller_cpu() - cpu_before
    after = wire(fleet)
    if rc != 0 or any(r['failed'] or r['unreachable'] for r in recap.values()):
        raise RuntimeError('%s failed (rc %d):\n%s' % (playbook, rc, out[-3000:]))
    if check_unchanged and any(r['changed'] for r in recap.values()):
        raise RuntimeError('%s changed something on a rerun: %s' % (playbook, recap))
    n = len(fleet.hosts)
    sent = [after[h][0] - before[h][0] for h in fleet.hosts]
    received = [after[h][1] - before[h][1] for h in fleet.hosts]
    tasks = junit_times(junit_dir)
    return {'wall_s': round(wall, 3), 'per_host_s': round(wall / n, 3),
            'controller_cpu_s': round(cpu, 3), 'controller_cpu_per_host_s': round(cpu / n, 3),
            'tasks_per_host': round(sum(r['ok'] + r['changed'] for r in recap.values()) / float(n), 1),
            'sent_per_host_bytes': int(statistics.median(sent)), 'received_per_host_bytes': int(statistics.median(received)),
            'task_seconds_per_host_sum': round(sum(sum(v) for v in tasks.values()) / n, 3),
            'slowest_tasks': sorted(((round(sum(v) / len(v), 3), k) for k, v in tasks.items()), reverse=True)[:6]}


def controller_cpu():
    """CPU seconds (user + system) of the ended children of this process: ansible-playbook, its forks and their
    ssh clients. The hosts' sshd and modules are not our children; an ssh ControlPersist master, which
    detaches, is not counted either (it only relays the encrypted stream)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_playbook(fleet, name, text):
    path = os.path.join(fleet.dir, 'bench-%s.yml' % name)
    with open(path, 'w') as f:
        f.write(text)
    return path


def one_task_rounds(fleet, forks, rounds, junit_dir):
    paths = dict((name, write_playbook(fleet, name, text)) for name, text in (('chain', CHAIN_TASK), ('stat', STAT_TASK)))
    out = {}
    for _round in range(rounds):
        for pipelining in ('0', '1'):
            for name in ('chain', 'stat'):
                r = run(fleet, paths[name], forks, junit_dir, {'ANSIBLE_PIPELINING': pipelining},
                        check_unchanged=(name == 'chain'))
                out.setdefault('%s%s' % (name, '_pipelining' if pipelining == '1' else ''), []).append(r)
    summary = {}
    for key, results in out.items():
        summary[key] = {'wall_s': round(statistics.median(r['wall_s'] for r in results), 3),
                        'per_host_s': round(statistics.median(r['per_host_s'] for r in results), 3),
                        'task_s_per_host': round(statistics.median(r['task_seconds_per_host_sum'] for r in results), 3),
                        'controller_cpu_per_host_s': round(statistics.median(r['controller_cpu_per_host_s']
                                                                             for r in results), 3),
                        'sent_per_host_bytes': int(statistics.median(r['sent_per_host_bytes'] for r in results)),
                        'received_per_host_bytes': int(statistics.median(r['received_per_host_bytes'] for r in results))}
    for suffix in ('', '_pipelining'):
        summary['ratio' + suffix] = round(summary['chain' + suffix]['wall_s'] / summary['stat' + suffix]['wall_s'], 2)
    return summary


def ssh_cmd(fleet, host_ip, control=None):
    cmd = ['ssh', '-q', '-o', 'BatchMode=yes', '-o', 'UserKnownHostsFile=%s/known_hosts' % fleet.dir,
           '-o', 'StrictHostKeyChecking=yes', '-i', '%s/id_ed25519' % fleet.dir, '-C']
    cmd += ['-o', 'ControlPath=%s' % control] if control else ['-o', 'ControlMaster=no', '-o', 'ControlPath=none']
    return cmd + ['root@%s' % host_ip]


def timed(cmd, rounds, stdin=None):
    times = []
    for _round in range(rounds):
        start = time.monotonic()
        subprocess.run(cmd, input=stdin, capture_output=True, check=True)
        times.append(time.monotonic() - start)
    return round(statistics.median(times), 4)


def payload_parts(path):
    """(zipped module code and module_utils, base64, bytes; everything else: the wrapper and the module's
    arguments, JSON) of an AnsiballZ file."""
    with open(path) as f:
        text = f.read()
    blob = max(re.findall(r'[A-Za-z0-9+/=]{1000,}', text), key=len, default='')
    return len(blob), len(text) - len(blob)


def breakdown(fleet, rounds, junit_dir):
    """Where one task's time goes, on host h01."""
    host = fleet.hosts[0]
    host_ip = re.search(r'%s:\n\s+ansible_host: (\S+)' % host, open(fleet.inventory).read()).group(1)
    result = {'ssh_fresh_connection_s': timed(ssh_cmd(fleet, host_ip) + ['true'], rounds)}
    control = os.path.join(fleet.dir, 'cm')
    subprocess.run(ssh_cmd(fleet, host_ip, control)[:-1] + ['-o', 'ControlMaster=yes', '-o', 'ControlPersist=120',
                   '-MNf', 'root@%s' % host_ip], check=True)
    try:
        via = ssh_cmd(fleet, host_ip, control)
        result['ssh_over_controlpersist_s'] = timed(via + ['true'], rounds)
        rtmp = tempfile.mkdtemp(prefix='npf-bench-rtmp-')
        try:
            for name, text in (('chain', CHAIN_TASK), ('stat', STAT_TASK)):
                run(fleet, write_playbook(fleet, name, text), 1, junit_dir,
                    {'ANSIBLE_KEEP_REMOTE_FILES': '1', 'ANSIBLE_REMOTE_TMP': rtmp})
            for name, module in (('chain', 'ebpf_chain'), ('stat', 'stat')):
                found = glob.glob(os.path.join(rtmp, '*', 'AnsiballZ_%s.py' % module))
                if not found:
                    continue
                payload = found[0]
                code, rest = payload_parts(payload)
                with open(payload, 'rb') as f:
                    body = f.read()
                result[name] = {
                    'payload_bytes': len(body), 'payload_code_b64_bytes': code, 'payload_wrapper_and_args_bytes': rest,
                    'copy_over_controlpersist_s': timed(via + ['cat > /dev/null'], rounds, stdin=body),
                    'module_run_s': timed(via + [fleet_python(fleet), payload], rounds),
                }
                result[name]['module_alone_s'] = round(result[name]['module_run_s'] - result['ssh_over_controlpersist_s'], 4)
        finally:
            shutil.rmtree(rtmp, ignore_errors=True)
    finally:
        subprocess.run(via + ['-O', 'exit'], capture_output=True, check=False)
    return result


def fleet_python(fleet):
    return re.search(r'ansible_python_interpreter: (\S+)', open(fleet.inventory).read()).group(1)


def load_average():
    with open('/proc/loadavg') as f:
        return f.read().split()[:3]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--hosts', type=int, nargs='+', default=[1, 8, 16, 32])
    parser.add_argument('--forks', type=int, nargs='+', default=[8, 32])
    parser.add_argument('--rounds', type=int, default=3, help='rounds of the one-task comparison')
    parser.add_argument('--breakdown', action='store_true')
    parser.add_argument('--deploy-max-hosts', type=int, default=32,
                        help='above this many hosts, time a one-task first chain apply instead of deploy.yml '
                             '(the prereqs role costs about 50 tasks per host)')
    parser.add_argument('--json', default=os.path.join(REPO, '.cache', 'bench-fleet.json'))
    args = parser.parse_args()
    results = {'machine': {'cpus': os.cpu_count(), 'load_at_start': load_average()}, 'runs': []}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)

    def save():
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)

    junit_dir = tempfile.mkdtemp(prefix='npf-bench-junit-')
    try:
        if args.breakdown:
            fleet = Fleet(tempfile.mkdtemp(prefix='npf-bench-'), 1)
            try:
                run(fleet, 'playbooks/deploy.yml', 1, junit_dir)
                results['breakdown'] = breakdown(fleet, max(5, args.rounds * 3), junit_dir)
                print(json.dumps(results['breakdown']), flush=True)
            finally:
                fleet.down()
            save()
        for n in args.hosts:
            for forks in args.forks:
                fleet = Fleet(tempfile.mkdtemp(prefix='npf-bench-'), n)
                try:
                    entry = {'hosts': n, 'forks': forks, 'load_before': load_average()}
                    if n <= args.deploy_max_hosts:
                        entry['first_deploy'] = run(fleet, 'playbooks/deploy.yml', forks, junit_dir)
                        entry['rerun'] = run(fleet, 'playbooks/deploy.yml', forks, junit_dir, check_unchanged=True)
                    else:
                        entry['first_chain'] = run(fleet, write_playbook(fleet, 'first', FIRST_TASK), forks, junit_dir)
                    entry['gather'] = run(fleet, 'playbooks/gather.yml', forks, junit_dir)
                    entry['one_task'] = one_task_rounds(fleet, forks, args.rounds, junit_dir)
                    entry['load_after'] = load_average()
                finally:
                    fleet.down()
                results['runs'].append(entry)
                save()
                print(json.dumps({k: entry[k] for k in ('hosts', 'forks', 'load_before', 'load_after')}),
                      json.dumps({k: (entry[k]['wall_s'], entry[k]['controller_cpu_per_host_s'], entry[k]['sent_per_host_bytes'])
                                  for k in ('first_deploy', 'rerun', 'first_chain', 'gather') if k in entry}),
                      json.dumps(entry['one_task']), flush=True)
    finally:
        shutil.rmtree(junit_dir, ignore_errors=True)
    print('figures in %s' % args.json)


if __name__ == '__main__':
    main()
