# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netprobe.ebpf.events: probe and chain events from the hosts of an inventory, for ansible-rulebook."""

from __future__ import annotations

DOCUMENTATION = r"""
---
short_description: Events of netprobe chains (probe messages, lost events, drift, metric thresholds) from the hosts of an inventory.
description:
  - Connects to every host the O(hosts) pattern selects in O(inventory), over ssh with the connection settings
    Ansible uses for that host (C(ansible_host), C(ansible_port), C(ansible_user),
    C(ansible_ssh_private_key_file), C(ansible_ssh_common_args), C(ansible_ssh_extra_args),
    C(ansible_python_interpreter), C(ansible_become) with sudo; C(ansible_connection=local) runs on the
    controller), and starts there, as a process of that ssh session, the collection's event relay. Nothing is
    installed on the host and nothing outlives the connection.
  - The relay follows the event ring buffers of the host's netprobe chains (np_emit messages, decoded into
    fields for the bundled probes, and np_sample packets), and every O(interval) seconds reads the chains and
    their metrics once, for drift (a chain detached, a probe missing, a chain gone), events the kernel lost
    (ring buffer full) and O(thresholds) crossings.
  - Every event is numbered on the host and kept there in a bounded spool until it is replaced by newer ones; a
    connection that drops is reopened after O(reconnect_delay) seconds and the relay first sends what followed
    the last event delivered, so nothing is delivered twice and nothing is skipped without a C(gap) event
    saying how many.
  - Each event is put on the queue as C({"netprobe": {...}}) with C(host) (the inventory name), C(type)
    (C(probe_event), C(lost), C(drift), C(threshold), C(gap), C(error), C(connection)) and the fields of that
    type; docs/events.md lists them.
options:
  inventory:
    description: Path of an Ansible inventory (any source C(ansible-inventory) reads).
    type: str
    required: true
  hosts:
    description: Host pattern within the inventory.
    type: str
    default: all
  interfaces:
    description: Only chains on these interfaces (default every chain of the host).
    type: list
    elements: str
  interval:
    description: Seconds between the relay's reads of chains and metrics (drift, lost events, thresholds), 0.2 - 3600.
    type: float
    default: 1.0
  thresholds:
    description:
      - Rates to watch on metric maps, each a dict with C(map), C(above) (per second, per key of the map) and
        optionally C(probe) (a probe name), C(field) (a dotted path in the value) and C(quiet_for) (seconds,
        default 10).
      - Gives a C(threshold) event with C(state=above) when a key's rate goes above C(above), and one with
        C(state=quiet) once it stayed at or below it for C(quiet_for) seconds.
    type: list
    elements: dict
  max_events_per_second:
    description: Events each relay reads per second at most (1 - 100000); the rest wait in the ring buffer and
      are counted as C(lost) by the kernel if it fills.
    type: int
    default: 1000
  spool_bytes:
    description: Bytes of events each host keeps for a reconnecting source (64 KiB - 256 MiB).
    type: int
    default: 4194304
  idle_timeout:
    description: Seconds without the source's keepalive after which a relay ends by itself (a cut network).
    type: float
    default: 30
  reconnect_delay:
    description: Seconds before a lost connection is reopened (doubling up to 60 while it keeps failing).
    type: float
    default: 2
  source_id:
    description: Names this source's spool on the hosts; two sources on the same hosts need different ids.
    type: str
    default: eda
"""

EXAMPLES = r"""
- name: React to the DDoS mitigator
  hosts: all
  sources:
    - netprobe.ebpf.events:
        inventory: inventory.yml
        hosts: webservers
        thresholds:
          - map: dropped
            above: 0
            quiet_for: 300
  rules:
    - name: A mitigator blocked a source
      condition: event.netprobe.type == "probe_event" and event.netprobe.message == "source_blocked"
      action:
        print_event:
"""

import asyncio
import io
import json
import os
import shlex
import sys
import zipfile

MAX_LINE = 64 * 1024
STDERR_TAIL = 4096
KEEPALIVE = 2.0
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
MODULE_UTILS = os.path.join(_ROOT, 'plugins', 'module_utils')
PACKAGES = ('ansible_collections', 'ansible_collections/netprobe', 'ansible_collections/netprobe/ebpf',
            'ansible_collections/netprobe/ebpf/plugins', 'ansible_collections/netprobe/ebpf/plugins/module_utils')
MAX_BUNDLE = 8 * 1024 * 1024

# Run on the host by `python -c`: the engine arrives on stdin as a zip (its size first, on a line of its own)
# and is imported from a memfd, so nothing is written to the host's disks; stdin then carries the settings
# line and the keepalives. Read unbuffered, a byte count at a time: nothing of what follows is consumed.
BOOTSTRAP = r'''
import os, sys
def line():
    b = b""
    while not b.endswith(b"\n"):
        c = os.read(0, 1)
        if not c or len(b) > 32:
            sys.exit("netprobe event relay: no bundle on stdin")
        b += c
    return b
n = int(line())
if not 0 < n <= %d:
    sys.exit("netprobe event relay: bundle size %%d out of bounds" %% n)
fd = os.memfd_create("netprobe-events")
while n:
    c = os.read(0, min(n, 1 << 20))
    if not c:
        sys.exit("netprobe event relay: stdin closed inside the bundle")
    os.write(fd, c)
    n -= len(c)
sys.path.insert(0, "/proc/self/fd/%%d" %% fd)
from ansible_collections.netprobe.ebpf.plugins.module_utils import _event_relay
sys.exit(_event_relay.main())
''' % MAX_BUNDLE


def bundle():
    """The engine's module_utils as a zip of regular packages (zipimport)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as z:
        for pkg in PACKAGES:
            z.writestr(pkg + '/__init__.py', '')
        for name in sorted(os.listdir(MODULE_UTILS)):
            if name.endswith('.py'):
                z.write(os.path.join(MODULE_UTILS, name), PACKAGES[-1] + '/' + name)
    return buf.getvalue()


class Host:
    """How to reach one inventory host, as Ansible would."""

    def __init__(self, name, hostvars):
        self.name = name
        self.v = hostvars

    def get(self, key, default=None):
        value = self.v.get(key)
        return default if value in (None, '') else value

    def python(self):
        configured = self.get('ansible_python_interpreter')
        candidates = [] if not configured or str(configured).startswith('auto') else [str(configured)]
        candidates += [str(p) for p in (self.get('ansible_interpreter_python_fallback') or [])]
        return candidates + ['/usr/bin/python3']

    def remote_command(self):
        """A POSIX sh command: the first interpreter that exists runs the bootstrap, with sudo when become."""
        become = bool(self.get('ansible_become', False))
        method = self.get('ansible_become_method', 'sudo')
        if become and method not in ('sudo', 'ansible.builtin.sudo'):
            raise ValueError('host %s: become method %s is not supported by netprobe.ebpf.events (use sudo)'
                             % (self.name, method))
        user = self.get('ansible_become_user', 'root')
        prefix = 'sudo -n -u %s -- ' % shlex.quote(str(user)) if become else ''
        tries = ' '.join(shlex.quote(p) for p in self.python())
        return ('for p in %s; do if [ -x "$p" ]; then exec %s"$p" -c %s; fi; done; '
                'echo "netprobe event relay: no python among %s" >&2; exit 127'
                % (tries, prefix, shlex.quote(BOOTSTRAP), tries.replace('"', '')))

    def argv(self):
        if self.get('ansible_connection') == 'local':
            return ['/bin/sh', '-c', self.remote_command()]
        argv = ['ssh', '-T', '-o', 'BatchMode=yes', '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3']
        if self.get('ansible_port'):
            argv += ['-p', str(self.get('ansible_port'))]
        if self.get('ansible_ssh_private_key_file'):
            argv += ['-i', os.path.expanduser(str(self.get('ansible_ssh_private_key_file')))]
        for key in ('ansible_ssh_common_args', 'ansible_ssh_extra_args'):
            argv += shlex.split(str(self.get(key, '')))
        target = str(self.get('ansible_host', self.name))
        if self.get('ansible_user'):
            target = '%s@%s' % (self.get('ansible_user'), target)
        return argv + [target, self.remote_command()]


def inventory_hosts(inventory, pattern):
    """[Host] of the pattern, with their variables templated the way a play sees them."""
    from ansible.inventory.manager import InventoryManager  # pylint: disable=import-outside-toplevel
    from ansible.parsing.dataloader import DataLoader  # pylint: disable=import-outside-toplevel
    from ansible.template import Templar  # pylint: disable=import-outside-toplevel
    from ansible.vars.manager import VariableManager  # pylint: disable=import-outside-toplevel
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[inventory])
    variables = VariableManager(loader=loader, inventory=inv)
    hosts = []
    for host in inv.get_hosts(pattern):
        hv = variables.get_vars(host=host)
        templar = Templar(loader=loader, variables=hv)
        wanted = {}
        for key in ('ansible_host', 'ansible_port', 'ansible_user', 'ansible_ssh_private_key_file',
                    'ansible_ssh_common_args', 'ansible_ssh_extra_args', 'ansible_python_interpreter',
                    'ansible_interpreter_python_fallback', 'ansible_become', 'ansible_become_method',
                    'ansible_become_user', 'ansible_connection'):
            if key in hv:
                try:
                    wanted[key] = templar.template(hv[key])
                except Exception:  # pylint: disable=broad-except
                    wanted[key] = hv[key]
        hosts.append(Host(host.name, wanted))
    if not hosts:
        raise ValueError('host pattern %r matches no host of %s' % (pattern, inventory))
    return hosts


class Connection:
    """One host's relay over one ssh session at a time, reopened when it drops; events numbered by the host's
    spool (epoch, seq) are delivered once each."""

    def __init__(self, host, settings, queue, payload):
        self.host = host
        self.settings = settings
        self.queue = queue
        self.payload = payload
        self.epoch = None
        self.seq = 0
        self.proc = None

    async def put(self, event):
        await self.queue.put({'netprobe': dict(event, host=self.host.name)})

    async def run(self, reconnect_delay):
        delay = reconnect_delay
        while True:
            started = asyncio.get_running_loop().time()
            why = await self.session()
            await self.put(dict(type='connection', state='down', reason=why, epoch=self.epoch, seq=self.seq))
            if asyncio.get_running_loop().time() - started > 30:
                delay = reconnect_delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)

    async def session(self):
        try:
            argv = self.host.argv()
        except ValueError as e:
            return str(e)
        try:
            self.proc = proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                limit=MAX_LINE, start_new_session=True)
        except OSError as e:
            return 'cannot start %s: %s' % (argv[0], e.strerror or e)
        tail = bytearray()

        async def stderr():
            while True:
                chunk = await proc.stderr.read(4096)
                if not chunk:
                    return
                tail.extend(chunk)
                del tail[:-STDERR_TAIL]

        async def keepalive():
            while True:
                await asyncio.sleep(KEEPALIVE)
                proc.stdin.write(b'\n')
                await proc.stdin.drain()

        reader = asyncio.ensure_future(stderr())
        pinger = None
        try:
            settings = dict(self.settings, epoch=self.epoch, since=self.seq)
            proc.stdin.write(b'%d\n' % len(self.payload) + self.payload + json.dumps(settings).encode() + b'\n')
            await proc.stdin.drain()
            pinger = asyncio.ensure_future(keepalive())
            silence = max(3 * float(self.settings['interval']), 10) + 10
            while True:
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), silence)
                except asyncio.TimeoutError:
                    return 'no word from the relay for %.0f s' % silence
                except ValueError:
                    return 'the relay sent a line longer than %d bytes' % MAX_LINE
                if not line:
                    break
                await self.line(line)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            if pinger is not None:
                pinger.cancel()
            if proc.returncode is None:
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
            await reader
        text = tail.decode('utf-8', 'replace').strip()
        return 'the relay ended (exit %s)%s' % (proc.returncode, (': ' + text[-1000:]) if text else '')

    async def line(self, line):
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if 'hello' in msg:
            hello = msg['hello']
            if hello.get('epoch') != self.epoch:  # a first connection: the stream starts now
                self.epoch, self.seq = hello.get('epoch'), int(hello.get('seq') or 0)
            await self.put(dict(type='connection', state='up', epoch=self.epoch, seq=self.seq))
            return
        if 'event' not in msg:
            return  # a heartbeat
        epoch, seq = msg.get('epoch'), msg.get('seq')
        if epoch == self.epoch and isinstance(seq, int) and seq <= self.seq:
            return  # delivered already
        self.epoch, self.seq = epoch, seq
        await self.put(dict(msg['event'], seq=seq, epoch=epoch))


async def main(queue, args):
    hosts = await asyncio.to_thread(inventory_hosts, args['inventory'], args.get('hosts', 'all'))
    settings = dict(source_id=args.get('source_id', 'eda'), interval=float(args.get('interval', 1.0)),
                    idle_timeout=float(args.get('idle_timeout', 30)),
                    max_events_per_second=int(args.get('max_events_per_second', 1000)),
                    spool_bytes=int(args.get('spool_bytes', 4 * 1024 * 1024)),
                    interfaces=args.get('interfaces') or [], thresholds=args.get('thresholds') or [])
    payload = bundle()
    connections = [Connection(h, settings, queue, payload) for h in hosts]
    tasks = [asyncio.ensure_future(c.run(float(args.get('reconnect_delay', 2)))) for c in connections]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for c in connections:
            if c.proc is not None and c.proc.returncode is None:
                c.proc.kill()


if __name__ == '__main__':
    # a quick look from a shell: python events.py INVENTORY [PATTERN] prints the events
    class _Print:
        async def put(self, event):
            print(json.dumps(event), flush=True)

    asyncio.run(main(_Print(), dict(inventory=sys.argv[1], hosts=sys.argv[2] if len(sys.argv) > 2 else 'all')))
