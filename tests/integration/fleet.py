# -*- coding: utf-8 -*-
"""A fleet lab (tools/fleet.sh) driven from Python: up, traffic from each host's peer, playbooks and ad-hoc
modules over ssh, down. Used by tests/integration/test_fleet.py, test_fleet_become.py and benchmarks/fleet.py."""

import contextlib
import json
import os
import re
import subprocess

from lab import BIN, REPO, ansible_env, run_tree


# The playbooks that change hosts have no default host pattern; the lab's hosts are group fleet.
HOST_PATTERNS = {'netprobe_hosts': 'fleet', 'rollout_hosts': 'fleet', 'gadget_hosts': 'fleet'}


class Fleet:
    """tools/fleet.sh up in `directory`; down() removes everything (call it in a finally).
    login='become': the hosts are reached as the unprivileged npfleet with sudo (FLEET_LOGIN=become)."""

    def __init__(self, directory, hosts, login='root'):
        self.dir = str(directory)
        self.env = dict(os.environ, FLEET_HOSTS=str(hosts), FLEET_DIR=self.dir, FLEET_LOGIN=login)
        self.up = subprocess.run([os.path.join(REPO, 'tools/fleet.sh'), 'up'], env=self.env, capture_output=True,
                                 text=True, check=False)
        if self.up.returncode != 0:
            self.down()
            raise AssertionError('tools/fleet.sh up failed:\n%s\n%s' % (self.up.stdout, self.up.stderr))
        self.inventory = os.path.join(self.dir, 'inventory.yml')
        with open(os.path.join(self.dir, 'fleet.env')) as f:
            self.tag = re.search(r'FLEET_TAG=(\w+)', f.read()).group(1)
        self.hosts = ['h%02d' % i for i in range(1, hosts + 1)]

    def down(self):
        return subprocess.run([os.path.join(REPO, 'tools/fleet.sh'), 'down'], env=self.env, capture_output=True,
                              text=True, check=False)

    def mgmt_link(self, host):
        """The host's management veth on the controller's side (its counters: bytes over ssh)."""
        return 'npf%sm%d' % (self.tag, int(host[1:]))

    def peer(self, host):
        return 'npf%s-p%s' % (self.tag, host[1:])

    def ping(self, host, count, check=True):
        return subprocess.run(['ip', 'netns', 'exec', self.peer(host), 'ping', '-q', '-c', str(count), '-i', '0.01',
                               '-W', '1', '198.18.0.2'], capture_output=True, text=True, check=check)

    def traffic(self):
        """Continuous pings from every peer, until stopped."""
        return [subprocess.Popen(['ip', 'netns', 'exec', self.peer(h), 'ping', '-q', '-i', '0.02', '198.18.0.2'],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for h in self.hosts]

    @contextlib.contextmanager
    def flowing(self):
        """traffic() for the length of a with block, stopped however the block ends."""
        procs = self.traffic()
        try:
            yield procs
        finally:
            for p in procs:
                p.terminate()
                p.wait()

    def playbook(self, playbook, extra_vars=None, limit=None, forks=None, env=None):
        """ansible-playbook over ssh, aimed at group fleet unless extra_vars name other hosts (HOST_PATTERNS);
        returns (rc, {host: recap counts}, stdout)."""
        cmd = [os.path.join(BIN, 'ansible-playbook'), '-i', self.inventory, playbook,
               '-e', json.dumps(dict(HOST_PATTERNS, **(extra_vars or {})))]
        if limit:
            cmd += ['--limit', limit]
        if forks:
            cmd += ['--forks', str(forks)]
        proc = run_tree(cmd, cwd=REPO, env=dict(ansible_env(), **(env or {})))
        recap = {}
        for line in proc.stdout.split('PLAY RECAP')[-1].splitlines():
            if ' : ' in line and 'ok=' in line:
                host, counts = line.split(' : ', 1)
                recap[host.strip()] = dict((k, int(v)) for k, v in (kv.split('=') for kv in counts.split()))
        if not recap:
            raise AssertionError('ansible-playbook did not run (rc %d):\n%s\n%s'
                                 % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
        return proc.returncode, recap, proc.stdout

    def adhoc(self, pattern, module, args, check=False, extra_vars=None):
        """`ansible <pattern> -m netprobe.ebpf.<module>` over ssh; {host: result}."""
        cmd = [os.path.join(BIN, 'ansible'), '-i', self.inventory, pattern, '-m', 'netprobe.ebpf.' + module,
               '-a', json.dumps(args)] + (['--check'] if check else [])
        if extra_vars:
            cmd += ['-e', json.dumps(extra_vars)]
        proc = run_tree(cmd, cwd=REPO, env=ansible_env())
        out, decoder = {}, json.JSONDecoder()
        for m in re.finditer(r'^(h\d+) \| (\w+)!? => ', proc.stdout, re.M):
            out[m.group(1)] = dict(decoder.raw_decode(proc.stdout[m.end():])[0], _status=m.group(2))
        assert out, proc.stdout + proc.stderr
        return out

    def facts(self):
        return dict((h, r['ansible_facts']['netprobe'])
                    for h, r in self.adhoc('fleet', 'ebpf_facts', {'gather_subset': ['chains', 'metrics']}).items())

    def host_cmd(self, host, *cmd, check=True, timeout=60):
        """cmd inside the host's mount and network namespaces (those of its sshd), as a process of that host."""
        with open(os.path.join(self.dir, 'hosts', host, 'sshd.pid')) as f:
            pid = f.read().split()[0]
        return subprocess.run(['nsenter', '-t', pid, '-m', '-n', '--'] + list(cmd), capture_output=True, text=True,
                              check=check, timeout=timeout)
