# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""snapshot_socket: the TCP and UDP sockets of a network namespace, from /proc/net.

A socket iterator (bpf_iter) is a tracing program, which kernels without fentry
support do not load; /proc/net/{tcp,tcp6,udp,udp6} read from inside the namespace
gives the same table. Owners come from /proc/<pid>/fd (bounded scan)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils import _gadget_loader as loader
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_decode import TCP_STATES

MAX_SOCKETS = 65536
MAX_PROCS = 32768
FILES = ('tcp', 'tcp6', 'udp', 'udp6')


def _addr(text, v6):
    host, port = text.split(':')
    raw = bytes.fromhex(host)
    if v6:
        raw = b''.join(struct.pack('<I', struct.unpack('>I', raw[i:i + 4])[0]) for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)
    return socket.inet_ntop(socket.AF_INET, struct.pack('<I', int(host, 16))), int(port, 16)


def _read_tables():
    out = {}
    for name in FILES:
        try:
            with open('/proc/thread-self/net/' + name) as f:
                out[name] = f.read().splitlines()[1:]
        except (IOError, OSError):
            out[name] = []
    return out


def _owners(inodes):
    owners = {}
    try:
        pids = [p for p in os.listdir('/proc') if p.isdigit()][:MAX_PROCS]
    except OSError:
        return owners
    for pid in pids:
        fd_dir = '/proc/%s/fd' % pid
        try:
            for fd in os.listdir(fd_dir):
                try:
                    link = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                if link.startswith('socket:['):
                    ino = int(link[8:-1])
                    if ino in inodes and ino not in owners:
                        owners[ino] = int(pid)
        except OSError:
            continue
    return owners


def _comm(pid):
    try:
        with open('/proc/%d/comm' % pid) as f:
            return f.read().strip()
    except (IOError, OSError):
        return None


def sockets(netns, enrich):
    """Rows of the namespace's sockets (netns: a _netlink.Netns)."""
    own = os.open('/proc/self/ns/net', os.O_RDONLY)
    target = os.open(netns.path, os.O_RDONLY)
    try:
        loader._setns(target)
        try:
            tables = _read_tables()
        finally:
            loader._setns(own)
    finally:
        os.close(own)
        os.close(target)
    rows = []
    for proto, lines in tables.items():
        for line in lines[:MAX_SOCKETS - len(rows)]:
            parts = line.split()
            if len(parts) < 10:
                continue
            v6 = proto.endswith('6')
            saddr, sport = _addr(parts[1], v6)
            daddr, dport = _addr(parts[2], v6)
            state = TCP_STATES.get(int(parts[3], 16), parts[3])
            tx, rx = (int(x, 16) for x in parts[4].split(':'))
            rows.append(dict(proto=proto, state=state, saddr=saddr, sport=sport, daddr=daddr, dport=dport,
                             tx_queue=tx, rx_queue=rx, uid=int(parts[7]), inode=int(parts[9]), pid=None, comm=None,
                             netns=netns.label))
    owners = _owners(set(r['inode'] for r in rows if r['inode']))
    for r in rows:
        pid = owners.get(r['inode'])
        if pid:
            r['pid'], r['comm'] = pid, _comm(pid)
    return rows
