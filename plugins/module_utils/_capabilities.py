# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What this host's kernel and libraries can do for netprobe, found by trying where it is cheap.

Attach tests run in a child process inside a private network namespace of its
own (unshare(CLONE_NEWNET)): it loads two-instruction programs, attaches them to
its own loopback and veth pair, and exits; the namespace and everything in it
vanish with it. Nothing is pinned, nothing outside that namespace is touched,
no packet is sent. Map tests create tiny maps that close with their fds.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import json
import os
import platform
import re
import select
import signal
import struct
import time

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _compile, _limits, _netlink, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

PROG_LOAD = 5
LINK_CREATE = 28
MAP_CREATE = 0
PROG_TYPE_SCHED_CLS = 3
PROG_TYPE_XDP = 6
MAP_TYPE_HASH = 1
MAP_TYPE_RINGBUF = 27
TCX_INGRESS = 46
CLONE_NEWNET = 0x40000000
ENOTSUPP = 524
PROBE_TIMEOUT = 10


def _insns(retval):
    # r0 = retval; exit
    return struct.pack('=BBhi', 0xB7, 0, 0, retval) + struct.pack('=BBhi', 0x95, 0, 0, 0)


def load_trivial_program(prog_type, retval):
    """A two-instruction program of this type; returns its fd (close it)."""
    code = ctypes.create_string_buffer(_insns(retval), 16)
    lic = ctypes.create_string_buffer(b'GPL')
    name = b'np_cap_probe'
    attr = struct.pack('=IIQQIIQII16sII', prog_type, 2, ctypes.addressof(code), ctypes.addressof(lic),
                       0, 0, 0, 0, 0, name, 0, 0)
    return _bpf.bpf(PROG_LOAD, attr)


def _map_create(map_type, key_size, value_size, max_entries):
    return _bpf.bpf(MAP_CREATE, struct.pack('=IIIIII', map_type, key_size, value_size, max_entries, 0, 0))


def probe_batch_ops():
    """BPF_MAP_LOOKUP_BATCH on a tiny hash map (Linux 5.6+)."""
    fd = _map_create(MAP_TYPE_HASH, 4, 8, 4)
    try:
        _bpf.map_update(fd, ctypes.c_uint32(1), ctypes.c_uint64(7))
        keys, values = ctypes.create_string_buffer(16), ctypes.create_string_buffer(32)
        out = ctypes.create_string_buffer(8)
        try:
            read, _done = _bpf.map_lookup_batch(fd, keys, values, 4, None, out)
        except _bpf.BpfError as e:
            if e.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, ENOTSUPP):
                return False
            raise
        return read == 1
    finally:
        os.close(fd)


def probe_ring_buffer():
    try:
        os.close(_map_create(MAP_TYPE_RINGBUF, 0, 0, 4096))
        return True
    except _bpf.BpfError:
        return False


def _bcc_info():
    """bcc's version without importing it (an import costs a compile toolchain's start-up)."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    try:
        spec = importlib.util.find_spec('bcc')
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return {'available': False, 'version': None, 'path': None}
    version = None
    try:
        text = _limits.read_proc(os.path.join(os.path.dirname(spec.origin), 'version.py'))
        found = re.search(r'''__version__\s*=\s*['"]([^'"]+)''', text)
        version = found.group(1) if found else None
    except NetprobeError:
        pass
    return {'available': True, 'version': version, 'path': os.path.dirname(spec.origin)}


def _pyroute2_version():
    """The installed distribution's version first: distro builds (Debian's 0.7.2) say `unknown` in
    pyroute2.__version__, which no version comparison can use."""
    if _netlink.pyroute2_missing() is not None:
        return None
    try:
        import pyroute2  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    try:
        from importlib import metadata  # pylint: disable=import-outside-toplevel
        return metadata.version('pyroute2')
    except Exception:  # pylint: disable=broad-except  # no importlib.metadata, or no metadata installed
        return getattr(pyroute2, '__version__', None) or 'unknown'


def _read(path):
    try:
        return _limits.read_proc(path).strip()
    except NetprobeError:
        return None


# --- attach tests in a throwaway network namespace ---------------------------------------------


def _attach_tests():
    """Run in the child, inside its private netns. Returns {capability: bool} and {capability: error}."""
    found, errors = {}, {}
    ipr = _netlink.Netns().iproute()
    try:
        lo = ipr.link_lookup(ifname='lo')[0]
        ipr.link('set', index=lo, state='up')
        ipr.link('add', ifname='npcap0', kind='veth', peer='npcap1')
        veth = ipr.link_lookup(ifname='npcap0')[0]
        peer = ipr.link_lookup(ifname='npcap1')[0]
        ipr.link('set', index=peer, state='up')
        ipr.link('set', index=veth, state='up')
        tests = (
            ('xdp_generic', PROG_TYPE_XDP, 2, lambda fd: _netlink.xdp_attach(ipr, lo, fd, 'skb')),
            ('xdp_native', PROG_TYPE_XDP, 2, lambda fd: _netlink.xdp_attach(ipr, veth, fd, 'native')),
            ('tc_clsact', PROG_TYPE_SCHED_CLS, 0, lambda fd: _netlink.tc_attach(ipr, lo, 'ingress', fd, 'np-cap')),
            ('tcx', PROG_TYPE_SCHED_CLS, 0,
             lambda fd: os.close(_bpf.bpf(LINK_CREATE, struct.pack('=IIIIIIQ', fd, lo, TCX_INGRESS, 0, 0, 0, 0)))),
            ('xdp_link', PROG_TYPE_XDP, 2,
             lambda fd: os.close(_bpf.link_create(fd, peer, _bpf.ATTACH_XDP, _netlink.XDP_FLAGS_SKB_MODE))),
        )
        for name, prog_type, retval, attach in tests:
            try:
                fd = load_trivial_program(prog_type, retval)
            except OSError as e:
                found[name], errors[name] = False, 'program load: %s' % e
                continue
            try:
                attach(fd)
                found[name] = True
            except Exception as e:  # any failure means "not here"; the message says why
                found[name], errors[name] = False, str(getattr(e, 'msg', e))
            finally:
                os.close(fd)
    finally:
        ipr.close()
    return found, errors


def probe_attachments():
    """Fork a child into a new network namespace, try the attachments there, report back."""
    if _netlink.pyroute2_missing() is not None:
        return {}, {'attach': 'pyroute2 is missing: attach capabilities not tested'}
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(read_end)
            libc = _bpf.libc()
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), 'unshare(CLONE_NEWNET): %s' % os.strerror(ctypes.get_errno()))
            payload = json.dumps(_attach_tests())
        except Exception as e:
            payload = json.dumps([{}, {'attach': 'attach tests failed: %s' % e}])
            code = 1
        try:
            os.write(write_end, payload.encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks, size, why = [], 0, None
    deadline = time.monotonic() + PROBE_TIMEOUT
    try:
        while why is None:
            ready, _w, _x = select.select([read_end], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                why = 'attach tests gave no answer within %d s (the trial was stopped)' % PROBE_TIMEOUT
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > _limits.MIB:  # our own child's answer is a few hundred bytes
                why = 'attach tests answered more than 1 MiB (the trial was stopped)'
    finally:
        os.close(read_end)
        if why is not None:  # a child stuck in a lock or in the kernel must not hold this run
            _stop_child(pid)
        else:
            os.waitpid(pid, 0)
    if why is not None:
        return {}, {'attach': why}
    try:
        found, errors = json.loads(b''.join(chunks).decode())
    except ValueError:
        return {}, {'attach': 'attach tests gave no answer'}
    return found, errors


def _stop_child(pid, grace=5.0):
    """SIGKILL and reap the child; one stuck in uninterruptible sleep is left to init after `grace` s."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    deadline = time.monotonic() + grace
    while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)


def builds(bcc, headers):
    """How this host can obtain a probe's program: bytecode (a shipped or cached image, loaded with bpf(2):
    always) and bcc (a compile here: bcc importable and kernel headers usable, docs/bytecode.md)."""
    return {'bytecode': True, 'bcc': bool(bcc.get('available')) and headers.get('kind') != 'none'}


# --- all together --------------------------------------------------------------------------------


def gather():
    """The host's capabilities as facts. Changes nothing on the host."""
    release = platform.release()
    caps = {
        'kernel_release': release,
        'kernel_version': [int(x) for x in re.findall(r'\d+', release)[:3]],
        'architecture': platform.machine(),
        'btf': os.path.exists('/sys/kernel/btf/vmlinux'),
        'bpffs_mounted': _state.bpffs_mounted(),
        'bpffs_path': _state.BPFFS,
        'jit_enabled': _read('/proc/sys/net/core/bpf_jit_enable') in ('1', '2'),
        'possible_cpus': _bpf.possible_cpus(),
        'bcc': _bcc_info(),
        'pyroute2_version': _pyroute2_version(),
        'kernel_headers': _compile.kernel_headers(build_cache=False),
    }
    caps['builds'] = builds(caps['bcc'], caps['kernel_headers'])
    errors = {}
    for name, prog_type, retval in (('prog_type_xdp', PROG_TYPE_XDP, 2), ('prog_type_tc', PROG_TYPE_SCHED_CLS, 0)):
        try:
            os.close(load_trivial_program(prog_type, retval))
            caps[name] = True
        except OSError as e:
            caps[name], errors[name] = False, str(e)
    try:
        caps['batch_map_ops'] = probe_batch_ops()
    except OSError as e:
        caps['batch_map_ops'], errors['batch_map_ops'] = False, str(e)
    caps['ring_buffer'] = probe_ring_buffer()
    found, attach_errors = probe_attachments()
    for name in ('xdp_generic', 'xdp_native', 'xdp_link', 'tc_clsact', 'tcx'):
        caps[name] = bool(found.get(name))
    errors.update(attach_errors)
    caps['probe_errors'] = errors
    return caps
