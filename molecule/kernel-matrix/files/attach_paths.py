"""Every head-attachment path of the engine (plugins/module_utils/_attach.py) that this kernel has, with
traffic: attach a counter, send packets, swap the head atomically under a flood, detach, and the
path's own property (XDP link: `ip link set dev X xdpgeneric off` fails and the link keeps running;
TCX: a foreign TCX program keeps its place and sees packets after ours). Which paths the kernel has
is tried for real (_attach.kernel_paths(): attachments in a throwaway namespace).
Usage: attach_paths.py <zip with the engine + tinybpf.py>. Prints JSON: checks {attach_<path>: true |
false | 'n/a'}, ran (paths that ran and passed), errors, paths (every figure per path). Cleans up."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])
from ansible_collections.netprobe.ebpf.plugins.module_utils import _attach, _bpf, _netlink  # noqa: E402
import tinybpf  # noqa: E402

TAG = secrets.token_hex(2)
NS_A, NS_B = 'kmx-at%s-a' % TAG, 'kmx-at%s-b' % TAG
IP_A, IP_B = '198.18.11.1', '198.18.11.2'
PORT = 9300


def sh(*args):
    return subprocess.run(args, check=False, capture_output=True, text=True)


def lab_up():
    for ns in (NS_A, NS_B):
        sh('ip', 'netns', 'add', ns)
        sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
        sh('ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1')
        sh('ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1')
    sh('ip', 'link', 'add', 'va', 'netns', NS_A, 'type', 'veth', 'peer', 'name', 'vb', 'netns', NS_B)
    for ns, ifname, ip in ((NS_A, 'va', IP_A), (NS_B, 'vb', IP_B)):
        sh('ip', '-n', ns, 'addr', 'add', ip + '/24', 'dev', ifname)
        sh('ip', '-n', ns, 'link', 'set', ifname, 'up')
    macs = {ns: json.loads(sh('ip', '-j', '-n', ns, 'link', 'show', ifname).stdout)[0]['address']
            for ns, ifname in ((NS_A, 'va'), (NS_B, 'vb'))}
    sh('ip', '-n', NS_A, 'neigh', 'replace', IP_B, 'lladdr', macs[NS_B], 'dev', 'va', 'nud', 'permanent')
    sh('ip', '-n', NS_B, 'neigh', 'replace', IP_A, 'lladdr', macs[NS_A], 'dev', 'vb', 'nud', 'permanent')


def lab_down():
    for ns in (NS_A, NS_B):
        if os.path.exists('/run/netns/' + ns):
            ino = str(os.stat('/run/netns/' + ns).st_ino)
            for d in ('/sys/fs/bpf/netprobe', '/run/netprobe/clsact'):
                shutil.rmtree(os.path.join(d, ino), ignore_errors=True)
        sh('ip', 'netns', 'del', ns)


def sock_in(ns):
    with _netlink.in_netns(_netlink.Netns(ns)):
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def send(count):
    s = sock_in(NS_A)
    for _n in range(count):
        s.sendto(b'k' * 32, (IP_B, PORT))
    s.close()
    time.sleep(0.1)


def flood_while(action, seconds_min=0.3):
    """Send UDP as fast as a thread can while action() runs; returns packets sent."""
    s = sock_in(NS_A)
    state = {'sent': 0, 'run': True}

    def run():
        while state['run']:
            for _b in range(32):
                s.sendto(b'f' * 32, (IP_B, PORT))
                state['sent'] += 1
            time.sleep(0.001)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t0 = time.time()
    action()
    time.sleep(max(0, seconds_min - (time.time() - t0)))
    state['run'] = False
    t.join()
    s.close()
    time.sleep(0.2)
    return state['sent']


def check_path(path, netns, ipr, ifindex):
    xdp = path.startswith('xdp')
    ptype, verdict = (tinybpf.XDP, tinybpf.XDP_PASS) if xdp else (tinybpf.SCHED_CLS, tinybpf.TCX_NEXT)
    pin_dir = '/sys/fs/bpf/netprobe/%d/vb/kmx-attach' % netns.inode
    target = _attach.Target(netns, ipr, ifindex, 'vb', 'ingress', os.path.join(pin_dir, path.replace('-', '_')),
                            position=_attach.Position('first'), filter_name='kmx-attach', own_name='tiny_count',
                            clsact_marker='/run/netprobe/clsact/%d/vb-kmx' % netns.inode)
    a = _attach.make(path, target)
    if path == _attach.TCX:  # markers: the foreign program after ours proves the order per packet
        heads = [tinybpf.marker(0, 0x4E01, name='tiny_count') for _n in range(2)]
    else:
        heads = [tinybpf.counter(ptype, verdict) for _n in range(2)]
    out = {'ran': True}
    foreign, foreign_link = None, None
    try:
        if path == _attach.TCX:  # a foreign TCX program attached first, ours declared first: it runs after us
            foreign = tinybpf.marker(0x4E01, 0xF0, name='foreign')
            with _netlink.in_netns(netns):
                foreign_link = _bpf.link_create(foreign.fd, ifindex, _bpf.ATTACH_TCX_INGRESS, 0, 0)
        a.attach(heads[0].fd)
        send(20)
        out['attach_count'] = heads[0].hits() == 20
        swaps = {'n': 0}

        def swap():
            for i in range(20):
                a.replace(heads[(i + 1) % 2].fd, heads[i % 2].fd)
                swaps['n'] += 1
                time.sleep(0.01)
        sent = flood_while(swap)
        out['flood_sent'] = sent
        out['replace_no_loss'] = heads[0].hits() + heads[1].hits() == 20 + sent
        expected = 20 + sent
        if path == _attach.XDP_LINK:
            res = sh('ip', '-n', NS_B, 'link', 'set', 'dev', 'vb', 'xdpgeneric', 'off')
            before = heads[0].hits()
            send(10)
            out['xdpgeneric_off_refused'] = res.returncode != 0 and a.query().attached and heads[0].hits() == before + 10
            expected += 10
        if path == _attach.TCX:
            state = a.query()
            out['tcx_place_kept'] = state.position == 0 and [p.prog_id for p in state.foreign] == [foreign.id]
            # hits[0]: packets the foreign program saw after ours (our mark on them), hits[1]: any other
            out['foreign_after_ours'] = (foreign.hits(0), foreign.hits(1)) == (20 + sent, 0)
        a.detach()
        send(5)
        out['detached'] = not a.query().attached and heads[0].hits() + heads[1].hits() == expected
    except Exception as e:  # recorded: the check fails with the reason in the JSON
        out['error'] = '%s: %s' % (type(e).__name__, e)
        try:
            a.detach()
        except Exception:
            pass
    finally:
        if foreign_link is not None:
            os.close(foreign_link)
        for p in heads + ([foreign] if foreign else []):
            p.close()
    out['passed'] = 'error' not in out and all(v for k, v in out.items() if isinstance(v, bool))
    return out


def main():
    have, errors = _attach.kernel_paths()
    result = {}
    lab_up()
    try:
        netns = _netlink.Netns(NS_B)
        ipr = netns.iproute()
        try:
            ifindex = _netlink.link_index(ipr, 'vb', netns)
            for path in _attach.PATHS:
                if not have.get(path):
                    result[path] = {'ran': False, 'passed': 'n/a', 'why': errors.get(
                        {'xdp-link': 'xdp_link', 'tcx': 'tcx'}.get(path, path), 'not available')}
                    continue
                result[path] = check_path(path, netns, ipr, ifindex)
        finally:
            ipr.close()
    finally:
        lab_down()
    checks = {'attach_' + path.replace('-', '_'): result[path]['passed'] for path in _attach.PATHS}
    ran = [path for path in _attach.PATHS if result[path]['passed'] is True]
    errors = ['%s: %s' % (path, result[path]['error']) for path in _attach.PATHS if 'error' in result[path]]
    failed = [path for path in _attach.PATHS if result[path]['passed'] is False]
    for path in failed:
        if 'error' not in result[path]:
            errors.append('%s: %s' % (path, ', '.join(k for k, v in result[path].items() if v is False)))
    print(json.dumps({'checks': checks, 'ran': ran, 'errors': errors, 'paths': result}, sort_keys=True))


if __name__ == '__main__':
    main()
