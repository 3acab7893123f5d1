# -*- coding: utf-8 -*-
"""A test lab: two network namespaces joined by a veth pair, real traffic, and Ansible runs.

Addresses: 198.18.0.0/15 only (IPv6: 2001:2::/48, the benchmarking range), inside namespaces
the lab creates. Everything it made (namespaces, links, pins, metadata) goes away in close(),
also when a test fails.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time

from pyroute2.netns import create_socket

from procwatch import kill_tree

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)  # ansible of the same venv as pytest
PIN_ROOT = '/sys/fs/bpf/netprobe'
RUN_ROOT = '/run/netprobe'
RECORDS_ROOT = '/var/lib/netprobe/records'  # chain records, keyed by namespace NAME (they outlive inodes)


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Lab:
    """ns A (veth `va`, 198.18.N.1) <-> ns B (veth `vb`, 198.18.N.2). Chains go on `vb`."""

    def __init__(self, ipv6=False):
        tag = secrets.token_hex(3)
        self.prefix = 'npt-%s-' % tag  # every namespace of this lab (and those tests derive from it) starts so
        self.ns_a, self.ns_b = 'npt-%s-a' % tag, 'npt-%s-b' % tag
        subnet = int(tag[:2], 16)
        self.ip_a, self.ip_b = '198.18.%d.1' % subnet, '198.18.%d.2' % subnet
        self.ip6_a, self.ip6_b = '2001:2:0:%x::1' % subnet, '2001:2:0:%x::2' % subnet
        self.if_a, self.if_b = 'va', 'vb'
        self.ipv6 = ipv6
        self._sockets = []
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _build(self):
        for ns in (self.ns_a, self.ns_b):
            sh('ip', 'netns', 'add', ns)
            sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
            # no IPv6 unless asked: router solicitations and MLD would be counted too
            sh('ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=%d' % (0 if self.ipv6 else 1))
            sh('ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=%d' % (0 if self.ipv6 else 1))
        sh('ip', 'link', 'add', self.if_a, 'netns', self.ns_a, 'type', 'veth', 'peer', 'name', self.if_b,
           'netns', self.ns_b)
        for ns, ifname, ip, ip6 in ((self.ns_a, self.if_a, self.ip_a, self.ip6_a),
                                    (self.ns_b, self.if_b, self.ip_b, self.ip6_b)):
            if self.ipv6:
                sh('ip', '-n', ns, 'link', 'set', ifname, 'addrgenmode', 'none')
            sh('ip', '-n', ns, 'addr', 'add', ip + '/24', 'dev', ifname)
            if self.ipv6:
                sh('ip', '-n', ns, 'addr', 'add', ip6 + '/64', 'dev', ifname, 'nodad')
            sh('ip', '-n', ns, 'link', 'set', ifname, 'up')
        # static neighbours: no ARP or ND packets in the counts
        mac = {ns: self._mac(ns, ifname) for ns, ifname in ((self.ns_a, self.if_a), (self.ns_b, self.if_b))}
        for ns, ifname, peer_ns, peer_ip, peer_ip6 in ((self.ns_a, self.if_a, self.ns_b, self.ip_b, self.ip6_b),
                                                       (self.ns_b, self.if_b, self.ns_a, self.ip_a, self.ip6_a)):
            sh('ip', '-n', ns, 'neigh', 'replace', peer_ip, 'lladdr', mac[peer_ns], 'dev', ifname, 'nud', 'permanent')
            if self.ipv6:
                sh('ip', '-n', ns, 'neigh', 'replace', peer_ip6, 'lladdr', mac[peer_ns], 'dev', ifname,
                   'nud', 'permanent')

    @staticmethod
    def _mac(ns, ifname):
        out = json.loads(sh('ip', '-j', '-n', ns, 'link', 'show', ifname).stdout)
        return out[0]['address']

    def netns_inode(self, ns):
        return os.stat('/run/netns/' + ns).st_ino

    # --- traffic ---------------------------------------------------------------------------

    def open_socket(self, ns, family=socket.AF_INET, kind=socket.SOCK_DGRAM, proto=0):
        s = create_socket(netns=ns, family=family, socket_type=kind, proto=proto, flags=0)
        self._sockets.append(s)
        return s

    def receiver(self, port, ns=None, family=socket.AF_INET):
        """A UDP socket in ns (default B) bound to port; count() drains it."""
        s = self.open_socket(ns or self.ns_b, family)
        s.bind(('::' if family == socket.AF_INET6 else '0.0.0.0', port))
        s.setblocking(False)
        return Receiver(s)

    def send_udp(self, count, port, src_ns=None, dst=None, payload=b'x' * 32, family=socket.AF_INET,
                 sport=None, interval=0.0, src=None):
        """Send count datagrams (one packet each) from src_ns (default A) to dst (default B's address),
        from the address src when given (it must be configured in src_ns)."""
        s = self.open_socket(src_ns or self.ns_a, family)
        if sport or src:
            s.bind((src or ('::' if family == socket.AF_INET6 else '0.0.0.0'), sport or 0))
        dst = dst or (self.ip6_b if family == socket.AF_INET6 else self.ip_b)
        for _packet in range(count):
            s.sendto(payload, (dst, port))
            if interval:
                time.sleep(interval)
        s.close()
        self._sockets.remove(s)

    def tcp_syn(self, port, src_ns=None, dst=None, family=socket.AF_INET):
        """Try one TCP connection (its SYN is what a filter sees). Returns True if it connected."""
        s = self.open_socket(src_ns or self.ns_a, family, socket.SOCK_STREAM)
        s.settimeout(0.3)
        try:
            s.connect((dst or (self.ip6_b if family == socket.AF_INET6 else self.ip_b), port))
            return True
        except OSError:
            return False
        finally:
            s.close()
            self._sockets.remove(s)

    # --- clean up --------------------------------------------------------------------------

    def close(self):
        for s in self._sockets:
            s.close()
        self._sockets = []
        for ns in (self.ns_a, self.ns_b):
            if os.path.exists('/run/netns/' + ns):
                ino = self.netns_inode(ns)
                shutil.rmtree(os.path.join(PIN_ROOT, str(ino)), ignore_errors=True)
                shutil.rmtree(os.path.join(RUN_ROOT, 'chains', str(ino)), ignore_errors=True)
                shutil.rmtree(os.path.join(RUN_ROOT, 'clsact', str(ino)), ignore_errors=True)
                shutil.rmtree(os.path.join(RUN_ROOT, 'history', str(ino)), ignore_errors=True)
                shutil.rmtree(os.path.join(RECORDS_ROOT, 'path', str(ino)), ignore_errors=True)
                sh('ip', 'netns', 'del', ns, check=False)
        named = os.path.join(RECORDS_ROOT, 'netns')
        for name in (os.listdir(named) if os.path.isdir(named) else []):
            if name.startswith(self.prefix):
                shutil.rmtree(os.path.join(named, name), ignore_errors=True)
        for root in (PIN_ROOT, named, os.path.join(RECORDS_ROOT, 'path'), RECORDS_ROOT):
            if os.path.isdir(root) and not os.listdir(root):
                os.rmdir(root)


class Receiver:
    def __init__(self, sock):
        self.sock = sock
        self.received = 0

    def count(self, settle=0.2):
        deadline = time.time() + settle
        while True:
            try:
                self.sock.recv(65535)
                self.received += 1
            except BlockingIOError:
                if time.time() >= deadline:
                    return self.received
                time.sleep(0.01)


# --- Ansible ---------------------------------------------------------------------------------

class ProcessTree(subprocess.Popen):
    """A child whose kill() ends it and everything below it, as does leaving its `with` block by an
    exception. Killing only ansible's CLI would leave its worker (which detaches into a session of its
    own) and the module running on: a test stopped by an error, Ctrl-C or SIGTERM would then remove its
    lab while the module still pins programs into it."""

    def kill(self):
        kill_tree(self.pid)
        self.wait()

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None:
            self.kill()
        return super().__exit__(exc_type, exc, traceback)


def run_tree(cmd, stdin_text=None, **kwargs):
    """subprocess.run(cmd, input=stdin_text, capture_output=True, text=True, **kwargs) in a ProcessTree."""
    stdin = subprocess.DEVNULL if stdin_text is None else subprocess.PIPE
    with ProcessTree(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as proc:
        out, err = proc.communicate(stdin_text)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def ansible_env():
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_CALLBACK_RESULT_FORMAT='json', ANSIBLE_DEPRECATION_WARNINGS='0')
    return env


def module_command(module, args, check=False, diff=False, extra_vars=None):
    """extra_vars: e.g. {'ansible_python_interpreter': ...} to run the module with another Python."""
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-m', 'netprobe.ebpf.' + module, '-a', json.dumps(args)]
    if extra_vars:
        cmd += ['-e', json.dumps(extra_vars)]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    return cmd


def module_result(returncode, stdout, stderr):
    """The host's result dict from what `ansible localhost -m ...` printed."""
    start = stdout.find('localhost | ')
    if start >= 0 and ' => {' in stdout[start:]:
        status = stdout[start:].split(' => ', 1)[0]
        result = json.JSONDecoder().raw_decode(stdout[stdout.index('{', start):])[0]
        if 'FAILED' in status or 'UNREACHABLE' in status:
            result['failed'] = True
        result['_output'] = stdout  # the callback prints diffs here, not in the JSON
        return result
    raise AssertionError('ansible printed no result (rc %d):\n%s\n%s' % (returncode, stdout, stderr))


def run_module(module, args, check=False, diff=False, extra_vars=None):
    """Ad-hoc `ansible localhost -m netprobe.ebpf.<module> -a <json>`; returns the host's result dict."""
    proc = run_tree(module_command(module, args, check, diff, extra_vars), cwd=REPO, env=ansible_env())
    return module_result(proc.returncode, proc.stdout, proc.stderr)


def start_module(module, args, check=False):
    """The same, in the background: returns the Popen; module_result(p.returncode, *p.communicate())."""
    return ProcessTree(module_command(module, args, check), cwd=REPO, env=ansible_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_playbook(playbook, extra_vars=None, check=False, diff=False, inventory=None):
    """ansible-playbook; returns (rc, recap, output) with recap = {host: {ok, changed, failed, ...}}."""
    cmd = [os.path.join(BIN, 'ansible-playbook'), playbook]
    if inventory:
        cmd += ['-i', inventory]
    if extra_vars:
        cmd += ['-e', json.dumps(extra_vars)]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    proc = run_tree(cmd, cwd=REPO, env=ansible_env())
    recap = {}
    for line in proc.stdout.split('PLAY RECAP')[-1].splitlines():
        if ' : ' in line and 'ok=' in line:
            host, stats = line.split(' : ', 1)
            recap[host.strip()] = dict((k, int(v)) for k, v in (kv.split('=') for kv in stats.split()))
    return proc.returncode, recap, proc.stdout + proc.stderr


# --- figures ---------------------------------------------------------------------------------

FIGURES = []


def figure(line):
    """A measured figure: printed now (pytest -s) and again in the terminal summary of every run."""
    print(line)
    FIGURES.append(line)
