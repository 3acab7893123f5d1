# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore figures (issue 19, docs/persistence.md): how long the boot-time restore takes, and what gets through.

On one host of the fleet lab (tools/fleet.sh: its own network and mount namespaces, bpffs, /run, records):
  chains      41 recorded chains of bundled probes (a counter and a firewall each; --veth-probes counter: a
              counter only on the veths): XDP ingress and TC egress
              on 20 veths, and XDP ingress on probe0 (the link to the host's peer)
  "reboot"    what a reboot leaves (as tests/integration/test_persist.py does): bpffs and /run/netprobe mounted
              fresh, every attachment and the bytecode cache gone; the records stay
  1 chain     the installed launcher run as the udev rule runs it (--netns host --interface probe0)
  40 chains   the launcher for every record of the 20 veths (as the boot unit runs it, restricted by --netns to
              leave probe0 out)
--rounds times, interleaved, each with the grace periods the launcher expedites around each attachment and
with normal ones (rcu_normal 1 for that run: what the restore cost before, and costs where an operator asks for
normal grace periods). For each: the launcher's wall time (process start to exit: Python start and
imports included, what a unit start costs until every chain is attached) and the engine's own time
(the summary's duration_s).

Then what reaches a service behind the firewall while the host "boots": probe0 is down (as interfaces are
before network-pre.target), the peer floods UDP to the firewall's dropped port, a UDP socket on the host
counts what arrives; the launcher runs, then probe0 goes up, the flood goes on for a second. The same with
the order reversed (the interface up before the restore, as a unit ordered after the network would be)
shows what the order buys.

Run as root after make setup: .venv/bin/python benchmarks/restore.py [--rounds 5] [--json out.json]
Everything it creates is removed at the end, also on failure.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from fleet import Fleet  # noqa: E402  pylint: disable=wrong-import-position

HOST = 'h01'
SYSROOT = '/var/lib/netprobe/sysroot'
LAUNCHER = SYSROOT + '/usr/lib/netprobe/netprobe-restore'
VETHS = ['rb%d' % i for i in range(1, 21)]
PORT = 9
COUNTER = {'name': 'seen', 'probe': 'counter'}
FIREWALL = {'name': 'fw', 'probe': 'firewall',
            'config': {'rules': [{'name': 'discard', 'action': 'drop', 'proto': 'udp', 'dport': PORT}]}}
PROBES = [COUNTER, FIREWALL]  # --veth-probes counter: the veths' chains hold a counter only
COUNT_SERVICE = '''
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.2", %d))
s.settimeout(0.2)
n, end = 0, time.monotonic() + float(sys.argv[1])
open("/run/np-bench-ready", "w").close()
while time.monotonic() < end:
    try:
        s.recv(2048)
        n += 1
    except socket.timeout:
        pass
print(n)
''' % PORT
FLOOD = '''
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, end = 0, time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        s.sendto(b"x" * 32, ("198.18.0.2", %d))
        n += 1
    except OSError:
        pass
    time.sleep(0.0005)
print(n)
''' % PORT


def ok(result):
    if result['_status'] not in ('SUCCESS', 'CHANGED'):
        raise SystemExit('a module run failed: %s' % json.dumps(result)[:2000])
    return result


def reboot(fleet):
    links = ' '.join('ip link set dev %s xdp off 2>/dev/null || true; tc qdisc del dev %s clsact 2>/dev/null || true;'
                     % (n, n) for n in VETHS + ['probe0'])
    fleet.host_cmd(HOST, 'sh', '-ec', 'umount -l /sys/fs/bpf; mount -t bpf -o mode=700 bpf /sys/fs/bpf; '
                   'rm -rf /run/netprobe /var/cache/netprobe/images; ' + links)


PROFILE = []  # --profile: [python] to run the launcher under cProfile (its output on stderr)


def launcher(fleet, *args):
    start = time.monotonic()
    prefix = PROFILE + ['-m', 'cProfile', '-s', 'cumulative'] if PROFILE else []
    proc = fleet.host_cmd(HOST, *(prefix + [LAUNCHER] + list(args)), check=False, timeout=300)
    if PROFILE:
        out, _sep, stats = proc.stdout.partition('\n')
        sys.stderr.write(stats[:12000])
        proc.stdout = out
    wall = time.monotonic() - start
    summary = json.loads(proc.stdout)
    if proc.returncode != 0 or summary['failed']:
        raise SystemExit('the launcher failed: %s %s' % (proc.stderr[-2000:], json.dumps(summary)[:2000]))
    return wall, summary


def set_up(fleet, veth_probes):
    fleet.host_cmd(HOST, 'sh', '-ec', ' '.join(
        'ip link add %s type veth peer name %sp; ip link set %s up; ip link set %sp up;' % (n, n, n, n) for n in VETHS))
    ok(fleet.adhoc(HOST, 'ebpf_restore', {'state': 'installed', 'root': SYSROOT})[HOST])
    for hook in ('ingress', 'egress'):
        ok(fleet.adhoc(HOST, 'ebpf_chain', {'interfaces': VETHS, 'hook': hook, 'probes': veth_probes, 'purge': True})[HOST])
    ok(fleet.adhoc(HOST, 'ebpf_chain', {'interface': 'probe0', 'probes': PROBES, 'purge': True})[HOST])
    records = fleet.host_cmd(HOST, 'find', '/var/lib/netprobe/records', '-name', '*.json').stdout.split()
    assert len(records) == 41, records


RCU_NORMAL = '/sys/kernel/rcu_normal'


@contextlib.contextmanager
def grace_periods(kind):
    """'expedited': as the launcher runs (it expedites RCU grace periods around each attachment); 'normal':
    /sys/kernel/rcu_normal 1 for the run, which the launcher respects (and the kernel lets win)."""
    if kind == 'expedited':
        yield
        return
    with open(RCU_NORMAL, 'w') as f:
        f.write('1')
    try:
        yield
    finally:
        with open(RCU_NORMAL, 'w') as f:
            f.write('0')


def timings(fleet, rounds):
    """Per grace-period kind and chain count, the launcher's wall and engine times; kinds interleaved."""
    out = dict((kind, {'1': {'wall': [], 'engine': []}, '40': {'wall': [], 'engine': []}}) for kind in KINDS)
    for _round in range(rounds):
        for kind in KINDS:
            with grace_periods(kind):
                reboot(fleet)
                wall, summary = launcher(fleet, '--netns', 'host', '--interface', 'probe0', '--trigger', 'udev')
                assert len(summary['restored']) == 1 and summary['rcu'] == kind, summary
                out[kind]['1']['wall'].append(wall)
                out[kind]['1']['engine'].append(summary['duration_s'])
                reboot(fleet)
                wall, summary = launcher_all_veths(fleet)
                assert len(summary['restored']) == 40 and summary['rcu'] == kind, summary
                out[kind]['40']['wall'].append(wall)
                out[kind]['40']['engine'].append(summary['duration_s'])
    return out


KINDS = ('expedited', 'normal')


def launcher_all_veths(fleet):
    """One launcher run for the 40 records of the veths: probe0's record is moved aside meanwhile."""
    record = '/var/lib/netprobe/records/host/probe0'
    fleet.host_cmd(HOST, 'mv', record, '/var/lib/netprobe/probe0-aside')
    try:
        return launcher(fleet, '--trigger', 'boot')
    finally:
        fleet.host_cmd(HOST, 'mv', '/var/lib/netprobe/probe0-aside', record)


def through_the_boot(fleet, restore_first):
    """Packets the service on the host received while the host 'booted' (flood to the dropped port)."""
    reboot(fleet)
    fleet.host_cmd(HOST, 'ip', 'link', 'set', 'probe0', 'down')
    fleet.host_cmd(HOST, 'rm', '-f', '/run/np-bench-ready')
    with open(os.path.join(fleet.dir, 'hosts', HOST, 'sshd.pid')) as f:
        pid = f.read().split()[0]
    service = subprocess.Popen(['nsenter', '-t', pid, '-m', '-n', '--', sys.executable, '-c', COUNT_SERVICE, '6'],
                               stdout=subprocess.PIPE, text=True)
    while fleet.host_cmd(HOST, 'test', '-e', '/run/np-bench-ready', check=False).returncode != 0:
        time.sleep(0.05)
    flood = subprocess.Popen(['ip', 'netns', 'exec', fleet.peer(HOST), sys.executable, '-c', FLOOD, '4'],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    if restore_first:
        launcher(fleet, '--netns', 'host', '--interface', 'probe0', '--trigger', 'boot')
        fleet.host_cmd(HOST, 'ip', 'link', 'set', 'probe0', 'up')
    else:
        fleet.host_cmd(HOST, 'ip', 'link', 'set', 'probe0', 'up')
        time.sleep(0.5)  # a unit after the network: its start comes some time after the interface is up
        launcher(fleet, '--netns', 'host', '--interface', 'probe0', '--trigger', 'boot')
    sent = int(flood.communicate(timeout=60)[0])
    received = int(service.communicate(timeout=60)[0])
    return {'sent': sent, 'received_by_the_service': received}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--json')
    parser.add_argument('--veth-probes', choices=['counter+firewall', 'counter'], default='counter+firewall',
                        help="what each of the 40 veth chains holds (probe0's chain always has both)")
    parser.add_argument('--profile', action='store_true', help='one round of 40 chains under cProfile, then stop')
    args = parser.parse_args()
    with open('/proc/loadavg') as f:
        load = f.read().split()[:3]
    with tempfile.TemporaryDirectory(prefix='np-bench-restore-') as tmp:
        fleet = Fleet(tmp, 1)
        try:
            set_up(fleet, PROBES if args.veth_probes == 'counter+firewall' else [COUNTER])
            if args.profile:
                python = fleet.host_cmd(HOST, 'head', '-1', LAUNCHER).stdout[2:].split()[0]
                PROFILE.append(python)
                reboot(fleet)
                launcher_all_veths(fleet)
                return
            figures = {'veth_probes': args.veth_probes, 'load_before': load,
                       'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                       'rounds': args.rounds, 'times': timings(fleet, args.rounds),
                       'restore_before_the_interface_is_up': through_the_boot(fleet, True),
                       'interface_up_before_the_restore': through_the_boot(fleet, False)}
        finally:
            fleet.down()
    for kind in KINDS:
        for n in ('1', '40'):
            t = figures['times'][kind][n]
            print('%-9s grace periods, %2s chain(s): launcher %.0f ms median (min %.0f, max %.0f), engine %.0f ms '
                  'median' % (kind, n, statistics.median(t['wall']) * 1000, min(t['wall']) * 1000,
                              max(t['wall']) * 1000, statistics.median(t['engine']) * 1000))
    for key in ('restore_before_the_interface_is_up', 'interface_up_before_the_restore'):
        print('%s: %s' % (key, figures[key]))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(figures, f, indent=1)


if __name__ == '__main__':
    main()
