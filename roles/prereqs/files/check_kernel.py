# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this host run netprobe's chains? Run by the prereqs role with the interpreter the modules use.

Loads two-instruction programs of each requested type through bpf(2) (no compiler involved), reads the
kernel config when the kernel exposes it, and checks the Python libraries. Prints one JSON object;
exits 1 when something asked for is missing, with the reasons in "problems".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import ctypes.util
import gzip
import json
import os
import platform
import struct
import sys

BPF_PROG_LOAD = 5
PROG_TYPES = {'xdp': 6, 'tc': 3}  # BPF_PROG_TYPE_XDP, BPF_PROG_TYPE_SCHED_CLS
SYSCALL_BPF = {'x86_64': 321, 'aarch64': 280, 'riscv64': 280, 'ppc64le': 361, 's390x': 351, 'armv7l': 386}
# kernel options each feature needs, checked when the kernel config can be read
KCONFIG = {
    'any': ['CONFIG_BPF_SYSCALL'],
    'xdp': [],
    'tc': ['CONFIG_NET_CLS_BPF', 'CONFIG_NET_SCH_INGRESS'],
}


def load_program(prog_type):
    """0 when a trivial program of this type loads, else the errno."""
    number = SYSCALL_BPF.get(platform.machine())
    if number is None:
        return None
    insns = struct.pack('<BBhi', 0xb7, 0, 0, 2) + struct.pack('<BBhi', 0x95, 0, 0, 0)  # r0 = 2; exit
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    license_buf = ctypes.create_string_buffer(b'GPL')
    attr = struct.pack('<IIQQIIQI', prog_type, 2, ctypes.addressof(insn_buf), ctypes.addressof(license_buf),
                       0, 0, 0, 0)
    attr_buf = ctypes.create_string_buffer(attr, 128)
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(number), ctypes.c_int(BPF_PROG_LOAD), attr_buf, ctypes.c_uint(128))
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


def kernel_config():
    release = platform.release()
    for path in ('/proc/config.gz', '/boot/config-' + release):
        try:
            opener = gzip.open if path.endswith('.gz') else open
            with opener(path, 'rt') as f:
                return dict(line.strip().split('=', 1) for line in f if line.startswith('CONFIG_') and '=' in line)
        except (IOError, OSError):
            continue
    return None


def version_tuple(text):
    out = []
    for part in text.split('.'):
        digits = ''.join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def main():
    features = [f for f in (sys.argv[1].split(',') if len(sys.argv) > 1 else ['xdp', 'tc']) if f]
    min_pyroute2 = version_tuple(sys.argv[2] if len(sys.argv) > 2 else '0.9')
    compiler = sys.argv[3] if len(sys.argv) > 3 else 'bcc'  # none: bcc is not needed (bytecode only)
    report = {'kernel': platform.release(), 'machine': platform.machine(), 'features': {}, 'problems': [],
              'python': sys.executable}
    config = kernel_config()
    report['kernel_config'] = config is not None
    for feature in ['any'] + features:
        if feature not in KCONFIG:
            report['problems'].append('unknown feature %r (known: xdp, tc)' % feature)
            continue
        missing = [opt for opt in KCONFIG[feature] if config is not None and config.get(opt) not in ('y', 'm')]
        if missing:
            report['problems'].append('%s: the kernel is built without %s' % (feature, ', '.join(missing)))
        if feature == 'any':
            continue
        err = load_program(PROG_TYPES[feature])
        report['features'][feature] = err == 0
        if err is None:
            report['problems'].append('%s: no bpf() syscall number known for %s' % (feature, platform.machine()))
        elif err:
            report['problems'].append('%s: the kernel refused a %s program: %s (root with CAP_BPF/CAP_SYS_ADMIN '
                                      'needed; unprivileged or seccomp-restricted containers cannot load programs)'
                                      % (feature, feature.upper(), os.strerror(err)))
    with open('/proc/mounts') as f:
        report['bpffs'] = any(line.split()[1:3] == ['/sys/fs/bpf', 'bpf'] for line in f)
    report['btf'] = os.path.exists('/sys/kernel/btf/vmlinux')
    try:
        import bcc  # noqa: F401 pylint: disable=unused-import
        report['bcc'] = getattr(bcc, '__version__', 'unknown')
    except Exception as e:  # pylint: disable=broad-except
        report['bcc'] = None
        if compiler == 'bcc':
            report['problems'].append('bcc Python bindings are not importable by %s: %s (prereqs_compiler: none '
                                      'needs no bcc: bytecode only)' % (sys.executable, e))
    try:
        import pyroute2
        report['pyroute2'] = pyroute2.__version__
        if version_tuple(pyroute2.__version__) < min_pyroute2:
            report['problems'].append('pyroute2 %s is too old for %s (need %s or newer)'
                                      % (pyroute2.__version__, sys.executable, '.'.join(map(str, min_pyroute2))))
    except Exception as e:  # pylint: disable=broad-except
        report['pyroute2'] = None
        report['problems'].append('pyroute2 is not importable by %s: %s' % (sys.executable, e))
    print(json.dumps(report))
    return 1 if report['problems'] else 0


if __name__ == '__main__':
    sys.exit(main())
