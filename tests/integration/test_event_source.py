# -*- coding: utf-8 -*-
"""The event source netprobe.ebpf.events and the rulebook netprobe.ebpf.ddos_blocklist, on the fleet lab reached
as a real fleet is (an unprivileged ssh login that becomes root with sudo), with the real ansible-rulebook.

- The closed loop: one host is flooded from one address; its DDoS mitigator blocks the source and says so
  (np_emit), the rulebook puts the source on the blocklist of every host, and takes it off once it is quiet.
  Measured on the data plane (UDP receivers on the hosts): seconds from the flood's start to the first dropped
  packet on the flooded host and on the others, packets that got through meanwhile; the other sources' packets
  all arrive.
- Delivery: the ssh connection of one host is killed while a probe sends one event per packet; after the
  reconnect every event arrives exactly once, in order.
- Bounds: a probe that emits on every packet of a flood keeps the relay within its rate, its CPU and memory
  bounds, and the excess is reported as lost; no relay outlives its source.
"""

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from fleet import Fleet
from lab import BIN, REPO, ProcessTree, ansible_env, figure

sys.path.insert(0, os.path.join(REPO, 'extensions', 'eda', 'plugins', 'event_source'))
import events  # noqa: E402  pylint: disable=wrong-import-position

HOSTS = 3
FLOODER = '198.18.9.9'
PORT = 9999
THRESHOLD_PPS = 300
RING_EVENTS = 256 * 1024 // (32 + 64 + 8)  # events a chain's ring buffer holds: header, NP_MSG_MAX, record header
RELAY_MARK = 'netprobe event relay'   # in the bootstrap a relay runs as (python -c): its command line

SENDER = r'''
import json, socket, sys, time
src, dst, port, pps, seconds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
sent, start, seq = [], time.time(), 0
while True:
    now = time.time()
    if now - start >= seconds:
        break
    due = start + seq / pps
    if now < due:
        time.sleep(min(due - now, 0.01))
        continue
    seq += 1
    s.sendto(seq.to_bytes(4, 'little') + b'x' * 28, (dst, port))
    sent.append((seq, now))
json.dump(sent, open(out, 'w'))
'''

RECEIVER = r'''
import json, socket, sys, time
port, seconds, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', port))
s.settimeout(0.2)
got, end = [], time.time() + seconds
open(out + '.ready', 'w').close()
while time.time() < end:
    try:
        data, (src, _p) = s.recvfrom(2048)
    except socket.timeout:
        continue
    got.append((src, int.from_bytes(data[:4], 'little'), time.time()))
json.dump(got, open(out, 'w'))
'''

SEQ_PROBE = r'''
#include "netprobe.h"
/* one event per UDP datagram to port 9998: the sequence number in its first 4 payload bytes */
NP_PROBE(ctx)
{
    struct np_packet pkt;
    __u32 seq = 0;

    if (np_parse(ctx, &pkt) < 0 || !pkt.udp || pkt.dport != PORT)
        return NP_PASS;
    if (np_load_bytes(ctx, 14 + 20 + 8, &seq, 4) == 0)
        np_emit(ctx, NP_EVENT_USER + 1, &seq, 4);
    return NP_PASS;
}
'''


def relays():
    """Pids of relays running on this machine (every fleet host's processes are processes of this machine)."""
    out = subprocess.run(['pgrep', '-f', RELAY_MARK], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def blocklists(fleet):
    out = {}
    for host, res in fleet.adhoc('fleet', 'ebpf_facts', {'gather_subset': ['chains']}).items():
        chains = res['ansible_facts']['netprobe']['chains']
        out[host] = [(p.get('config') or {}).get('blocklist', []) for c in chains for p in c['probes']
                     if p['origin'] == 'bundled:ddos_mitigator']
    return out


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    fleet = Fleet(tmp_path_factory.mktemp('fleet-events'), HOSTS, login='become')
    try:
        for host in fleet.hosts:
            # the flooding address lives on every peer; the host routes it back (its receiver sees it)
            subprocess.run(['ip', '-n', fleet.peer(host), 'addr', 'add', FLOODER + '/32', 'dev', 'eth0'], check=True)
            fleet.host_cmd(host, 'ip', 'route', 'add', FLOODER + '/32', 'dev', 'probe0')
        res = fleet.adhoc('fleet', 'ebpf_probe', {
            'name': 'ddos', 'interface': 'probe0', 'probe': 'ddos_mitigator', 'position': 0,
            'config': {'auto_block': {'threshold_pps': THRESHOLD_PPS, 'hold_time': 60}}})
        assert all(r['_status'] == 'CHANGED' for r in res.values()), res
        yield fleet
    finally:
        down = fleet.down()
        assert down.returncode == 0, down.stderr
        assert not relays(), 'a relay outlived the fleet'


def peer_run(fleet, host, script, *args):
    return subprocess.Popen(['ip', 'netns', 'exec', fleet.peer(host), sys.executable, '-c', script] + [str(a) for a in args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def host_run(fleet, host, script, *args):
    with open(os.path.join(fleet.dir, 'hosts', host, 'sshd.pid')) as f:
        pid = f.read().split()[0]
    return subprocess.Popen(['nsenter', '-t', pid, '-m', '-n', '--', sys.executable, '-c', script] + [str(a) for a in args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(what, predicate, timeout, step=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError('%s: not within %s s' % (what, timeout))


def load(path):
    with open(path) as f:
        return json.load(f)


def first_drop(sent, received_seqs):
    """(send time of the first packet that did not arrive and after which none arrived, packets that arrived)."""
    last_arrived = max([seq for seq, _t in sent if seq in received_seqs] or [0])
    after = [t for seq, t in sent if seq > last_arrived]
    return (after[0] if after else None), len(received_seqs)


def docs_example():
    """docs/events.md's "Example to copy": its vars.yml and its ansible-rulebook command."""
    text = open(os.path.join(REPO, 'docs', 'events.md')).read().split('## Example to copy', 1)[1]
    variables = yaml.safe_load(re.search(r'```yaml\n(.*?)```', text, re.S).group(1))
    command = re.search(r'```sh\n(ansible-rulebook .*?)\n', text, re.S).group(1)
    return variables, command


def test_rulebook_blocks_a_flooding_source_on_every_host_and_unblocks_it_when_quiet(fleet, tmp_path):
    """docs/events.md's example, run as written in a directory holding inventory/ (the fleet's hosts file and
    group_vars/) and vars.yml (the example's, with the fleet's group and a quiet period the test can wait for)."""
    variables, command = docs_example()
    assert variables['netprobe_inventory'] == 'inventory/' and ' -i inventory/ ' in command
    shutil.copytree(os.path.join(fleet.dir, 'group_vars'), str(tmp_path / 'inventory' / 'group_vars'))
    shutil.copy(fleet.inventory, str(tmp_path / 'inventory' / 'hosts.yml'))
    (tmp_path / 'vars.yml').write_text(yaml.safe_dump(dict(variables, netprobe_hosts='fleet', netprobe_quiet_seconds=4)))
    env = dict(ansible_env(), ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, '.cache', 'collections'),
               PATH=BIN + os.pathsep + os.environ['PATH'])
    log = open(tmp_path / 'rulebook.log', 'w')
    rulebook = ProcessTree(shlex.split(command) + ['-v'], cwd=str(tmp_path), env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    try:
        wait_for('a relay on every host', lambda: len(relays()) >= HOSTS, 60)
        time.sleep(2)  # the relays' first read of the chains
        out = dict((h, str(tmp_path / ('recv-%s.json' % h))) for h in fleet.hosts)
        receivers = [host_run(fleet, h, RECEIVER, PORT, 22, out[h]) for h in fleet.hosts]
        wait_for('receivers', lambda: all(os.path.exists(out[h] + '.ready') for h in fleet.hosts), 10)
        legit = dict((h, str(tmp_path / ('legit-%s.json' % h))) for h in fleet.hosts)
        probes = dict((h, str(tmp_path / ('probe-%s.json' % h))) for h in fleet.hosts[1:])
        flood = str(tmp_path / 'flood.json')
        senders = [peer_run(fleet, h, SENDER, '198.18.0.1', '198.18.0.2', PORT, 20, 18, legit[h]) for h in fleet.hosts]
        senders += [peer_run(fleet, h, SENDER, FLOODER, '198.18.0.2', PORT, 50, 12, probes[h]) for h in fleet.hosts[1:]]
        time.sleep(1)
        senders.append(peer_run(fleet, fleet.hosts[0], SENDER, FLOODER, '198.18.0.2', PORT, 2000, 8, flood))
        for p in senders + receivers:
            _out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        got = dict((h, load(out[h])) for h in fleet.hosts)

        # other sources were never blocked: every packet from the peers' own address arrived
        for h in fleet.hosts:
            arrived = set(seq for src, seq, _t in got[h] if src == '198.18.0.1')
            assert len(arrived) == len(load(legit[h])), (h, len(arrived), len(load(legit[h])))

        flood_sent = load(flood)
        t0 = flood_sent[0][1]
        dropped_at, passed = first_drop(flood_sent, set(seq for src, seq, _t in got[fleet.hosts[0]] if src == FLOODER))
        assert dropped_at is not None and passed <= THRESHOLD_PPS + 50, (dropped_at, passed)
        figure('events: flooded host %s dropped the flood %.2f s after its start (%d of %d packets got through)'
               % (fleet.hosts[0], dropped_at - t0, passed, len(flood_sent)))
        assert dropped_at - t0 < 5
        for h in fleet.hosts[1:]:
            sent = [(seq, t) for seq, t in load(probes[h]) if t >= t0]
            seqs = set(seq for src, seq, _t in got[h] if src == FLOODER)
            at, _n = first_drop(sent, seqs)
            assert at is not None, '%s never dropped %s' % (h, FLOODER)
            through = len([1 for seq, t in sent if seq in seqs and t < at])
            figure('events: host %s dropped %s %.2f s after the flood on %s started (%d of its packets got through '
                   'meanwhile)' % (h, FLOODER, at - t0, fleet.hosts[0], through))
            assert at - t0 < 5, 'the blocklist reached %s %.2f s after the flood started (goal: under 5 s)' % (h, at - t0)

        # quiet: off the blocklists again, everywhere; nothing else was ever on them
        wait_for('blocklists empty again', lambda: all(lists == [[]] for lists in blocklists(fleet).values()), 60, 2)
    finally:
        rulebook.send_signal(signal.SIGINT)
        try:
            rulebook.wait(30)
        except subprocess.TimeoutExpired:
            rulebook.kill()
        log.close()
    text = (tmp_path / 'rulebook.log').read_text()
    assert 'Traceback' not in text, text[-3000:]
    wait_for('no relay left after the rulebook ended', lambda: not relays(), 20)


class _Collect:
    """An asyncio queue stand-in that keeps events (the test reads them from its own thread)."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    async def put(self, event):
        with self.lock:
            self.items.append(event['netprobe'])

    def of(self, kind):
        with self.lock:
            return [e for e in self.items if e['type'] == kind]


def _run_source(coro_factory):
    loop = asyncio.new_event_loop()
    task = {}

    def run():
        asyncio.set_event_loop(loop)
        task['t'] = loop.create_task(coro_factory())
        try:
            loop.run_until_complete(task['t'])
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stop():
        loop.call_soon_threadsafe(task['t'].cancel)
        thread.join(30)
    return stop


def test_source_resumes_after_a_killed_connection_without_duplicates_or_gaps(fleet, tmp_path):
    host = fleet.hosts[1]
    res = fleet.adhoc(host, 'ebpf_probe', {'name': 'seq', 'interface': 'probe0', 'position': 1,
                                           'source': SEQ_PROBE, 'cflags': ['-DPORT=9998']})
    assert res[host]['_status'] == 'CHANGED', res
    try:
        target = events.inventory_hosts(fleet.inventory, host)[0]
        queue = _Collect()
        conn = events.Connection(target, dict(source_id='resume', interval=0.5, idle_timeout=30,
                                              max_events_per_second=100000, spool_bytes=1 << 20, interfaces=[],
                                              thresholds=[]), queue, events.bundle())
        stop = _run_source(lambda: conn.run(0.5))
        try:
            wait_for('connected', lambda: queue.of('connection'), 60)
            sender = peer_run(fleet, host, SENDER, '198.18.0.1', '198.18.0.2', 9998, 200, 3, str(tmp_path / 's.json'))
            wait_for('some events', lambda: len(queue.of('probe_event')) > 100, 10, 0.01)
            os.kill(conn.proc.pid, signal.SIGKILL)  # the ssh client, mid-stream
            sender.communicate(timeout=30)
            sent = load(str(tmp_path / 's.json'))
            wait_for('every event', lambda: len(queue.of('probe_event')) >= len(sent), 60)
            time.sleep(2)
        finally:
            stop()
        seqs = [int.from_bytes(bytes.fromhex(e['data']), 'little') for e in queue.of('probe_event')]
        states = [e['state'] for e in queue.of('connection')]
        figure('events: %d events across a killed ssh connection (%s), %d delivered, %d distinct'
               % (len(sent), ' -> '.join(states), len(seqs), len(set(seqs))))
        assert 'down' in states and states.count('up') >= 2, states
        assert seqs == [s for s, _t in sent], 'duplicates or gaps: %s' % seqs
        assert not queue.of('gap') and not queue.of('lost'), (queue.of('gap'), queue.of('lost'))
    finally:
        fleet.adhoc(host, 'ebpf_probe', {'name': 'seq', 'interface': 'probe0', 'state': 'absent'})
    wait_for('the relay ended with its connection', lambda: not relays(), 20)


def test_an_event_flood_stays_within_the_relay_bounds_and_is_reported_as_lost(fleet, tmp_path):
    host = fleet.hosts[2]
    # ahead of the mitigator, which would block the flood's source after THRESHOLD_PPS packets
    res = fleet.adhoc(host, 'ebpf_probe', {'name': 'seq', 'interface': 'probe0', 'position': 0,
                                           'source': SEQ_PROBE, 'cflags': ['-DPORT=9997']})
    assert res[host]['_status'] == 'CHANGED', res
    rate = 1000
    try:
        target = events.inventory_hosts(fleet.inventory, host)[0]
        queue = _Collect()
        conn = events.Connection(target, dict(source_id='flood', interval=1, idle_timeout=30,
                                              max_events_per_second=rate, spool_bytes=1 << 20, interfaces=[],
                                              thresholds=[]), queue, events.bundle())
        stop = _run_source(lambda: conn.run(0.5))
        try:
            wait_for('connected', lambda: queue.of('connection'), 60)
            pid = wait_for('the relay', lambda: [p for p in relays() if _comm(p).startswith('python')], 10)[0]
            before = _cpu_seconds(pid)
            start = time.time()
            # a flood as fast as one sender makes it (about 100,000 packets a second here), for 5 s
            flood = peer_run(fleet, host, SENDER, '198.18.0.1', '198.18.0.2', 9997, 150000, 5, str(tmp_path / 'f.json'))
            flood.communicate(timeout=60)
            wall = time.time() - start
            cpu = _cpu_seconds(pid) - before
            rss = _rss_kib(pid)
            sent = len(load(str(tmp_path / 'f.json')))
            time.sleep(3)
        finally:
            stop()
        delivered = len(queue.of('probe_event'))
        lost = sum(e['count'] for e in queue.of('lost'))
        figure('events: flood of %d packets in %.1f s (%.0f/s), one event each: %d delivered (rate %d/s), %d '
               'reported lost by the kernel; relay CPU %.0f%% of a core, RSS %d KiB'
               % (sent, wall, sent / wall, delivered, rate, lost, 100 * cpu / wall, rss))
        assert delivered <= rate * (wall + 5), delivered
        # every event was delivered or reported lost, but for what still waits in the ring buffer (256 KiB)
        assert sent - RING_EVENTS <= delivered + lost <= sent, (sent, delivered, lost)
        assert cpu / wall < 0.25, 'the relay used %.0f%% of a core' % (100 * cpu / wall)
        assert rss < 64 * 1024, rss
    finally:
        fleet.adhoc(host, 'ebpf_probe', {'name': 'seq', 'interface': 'probe0', 'state': 'absent'})
    wait_for('the relay ended with its connection', lambda: not relays(), 20)


def _comm(pid):
    try:
        with open('/proc/%d/comm' % pid) as f:
            return f.read().strip()
    except OSError:
        return ''


def _cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    return 0


def test_source_reports_drift_when_a_chain_is_detached_by_hand_and_when_it_is_repaired(fleet):
    host = fleet.hosts[2]
    counter = {'name': 'egress_count', 'interface': 'probe0', 'hook': 'egress', 'probe': 'counter',
               'tc_attach': 'cls_bpf'}
    assert fleet.adhoc(host, 'ebpf_probe', counter)[host]['_status'] == 'CHANGED'
    try:
        queue = _Collect()
        conn = events.Connection(events.inventory_hosts(fleet.inventory, host)[0],
                                 dict(source_id='drift', interval=0.5, idle_timeout=30, max_events_per_second=1000,
                                      spool_bytes=1 << 20, interfaces=['probe0'], thresholds=[]),
                                 queue, events.bundle())
        stop = _run_source(lambda: conn.run(0.5))
        try:
            wait_for('connected', lambda: queue.of('connection'), 60)
            time.sleep(1)
            assert not queue.of('drift'), queue.of('drift')  # nothing to say while the kernel matches the records
            fleet.host_cmd(host, 'tc', 'filter', 'del', 'dev', 'probe0', 'egress')
            drift = wait_for('a drift event', lambda: [e for e in queue.of('drift') if e['drift']], 10)[0]
            assert drift['chain'] == {'netns': 'host', 'interface': 'probe0', 'hook': 'egress', 'mode': 'tc'}, drift
            assert any('detached' in d for d in drift['drift']) and drift['probes'] == ['egress_count'], drift
            assert fleet.adhoc(host, 'ebpf_probe', counter)[host]['_status'] == 'CHANGED'  # the repair
            cleared = wait_for('drift cleared', lambda: [e for e in queue.of('drift') if not e['drift']], 10)[0]
            assert cleared['attached'] and cleared['seq'] > drift['seq'], cleared
        finally:
            stop()
    finally:
        fleet.adhoc(host, 'ebpf_chain', {'interface': 'probe0', 'hook': 'egress', 'mode': 'tc', 'state': 'absent'})


def test_a_failing_blocklist_action_leaves_every_chain_as_it_was(fleet):
    before = fleet.facts()
    rc, recap, out = fleet.playbook(os.path.join(REPO, 'playbooks', 'blocklist.yml'),
                                    {'blocklist_hosts': 'fleet', 'blocklist_source': '198.18.9.9/33'})
    assert rc != 0 and all(r['failed'] == 1 and r['changed'] == 0 for r in recap.values()), out[-2000:]
    assert '198.18.9.9/33' in out and 'Traceback' not in out, out[-2000:]
    after = fleet.facts()
    for host in fleet.hosts:
        assert [(c['head_prog_id'], [(p['name'], p['prog_id'], p['config']) for p in c['probes']])
                for c in after[host]['chains']] == \
               [(c['head_prog_id'], [(p['name'], p['prog_id'], p['config']) for p in c['probes']])
                for c in before[host]['chains']]
