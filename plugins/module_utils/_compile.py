# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compile and load probes with bcc, pin what they made, find their declarations.

bcc is imported only when something must be compiled: a run that changes
nothing never pays for it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import glob
import hashlib
import json
import os
import platform
import re
import struct
import tempfile
import traceback

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._state import makedirs_private

CHAIN_SIZE = 64
ENTRY = 'np_entry'
HEADER_FILES = ('netprobe.h', 'netprobe_chain.h', 'netprobe_chain.c')
PLUMBING_MAPS = ('np_chain', 'np_meta_store')
HEADERS_CACHE = '/var/cache/netprobe/kernel-headers'
METRIC_MARK = 'np_metric__'
CONFIG_MARK = 'np_config__'
BPF_MOV64_IMM_R0 = 0xB7


class MissingLibrary(Exception):
    def __init__(self, library, tb):
        super(MissingLibrary, self).__init__(library)
        self.library = library
        self.traceback = tb


def import_bcc():
    try:
        import bcc  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise MissingLibrary('bcc (Debian/Ubuntu package python3-bpfcc)', traceback.format_exc())
    return bcc


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b'\0')
    return h.hexdigest()


def spec_hash(source, cflags, mode, files):
    """What decides the compiled program (slot aside): a rerun with the same hash compiles nothing."""
    return sha256(source, json.dumps(list(cflags)), mode, *[files[n] for n in HEADER_FILES])


# --- kernel headers -------------------------------------------------------------------------


def _version_key(path):
    return [int(x) if x.isdigit() else x for x in re.split(r'(\d+)', os.path.basename(path))]


def _merge_split_headers(arch_dir, common_dir):
    """Debian splits headers into -amd64 (generated) and -common: bcc wants one tree.
    Build it once as a tree of symlinks under /var/cache/netprobe."""
    target = os.path.join(HEADERS_CACHE, os.path.basename(arch_dir))
    if os.path.isdir(target):
        return target
    makedirs_private(HEADERS_CACHE)
    tmp = tempfile.mkdtemp(dir=HEADERS_CACHE, prefix='.build-')
    for src_root in (common_dir, arch_dir):  # arch-specific files win
        for dirpath, _dirs, files in os.walk(src_root):
            rel = os.path.relpath(dirpath, src_root)
            out = os.path.normpath(os.path.join(tmp, rel))
            if not os.path.isdir(out):
                os.makedirs(out)
            for name in files:
                link = os.path.join(out, name)
                if os.path.lexists(link):
                    os.unlink(link)
                os.symlink(os.path.join(dirpath, name), link)
    os.rename(tmp, target)
    return target


def kernel_headers(build_cache=True):
    """Which headers bcc will use: {'kind': exact|kheaders|fallback, 'path': ..., 'release': ...}.
    build_cache=False only reports (facts change nothing), without building the merged tree."""
    release = platform.release()
    build = '/lib/modules/%s/build' % release
    if os.path.isdir(build):
        return {'kind': 'exact', 'path': os.path.realpath(build), 'release': release}
    if os.path.exists('/sys/kernel/kheaders.tar.xz'):
        return {'kind': 'kheaders', 'path': '/sys/kernel/kheaders.tar.xz', 'release': release}
    candidates = [d for d in glob.glob('/usr/src/linux-headers-*') if os.path.isdir(os.path.join(d, 'include'))
                  and not d.endswith('-common')]
    for cand in sorted(candidates, key=_version_key, reverse=True):
        if os.path.exists(os.path.join(cand, 'include/linux/kconfig.h')):
            return {'kind': 'fallback', 'path': cand, 'release': release}
        common = re.sub(r'-[^-]+$', '-common', cand)
        if os.path.exists(os.path.join(common, 'include/linux/kconfig.h')):
            merged = (_merge_split_headers(cand, common) if build_cache
                      else os.path.join(HEADERS_CACHE, os.path.basename(cand)))
            return {'kind': 'fallback', 'path': merged, 'release': release,
                    'from': os.path.basename(cand)}
    return {'kind': 'none', 'path': None, 'release': release}


def prepare_headers():
    """Point bcc at usable headers. Returns (info, warning or None)."""
    info = kernel_headers()
    if info['kind'] == 'none':
        raise NetprobeError('no kernel headers for bcc: /lib/modules/%s/build is missing and no '
                            'linux-headers-* package is installed. Install linux-headers-%s, or any '
                            'linux-headers package as a fallback (the netprobe.ebpf.prereqs role does)'
                            % (info['release'], info['release']))
    if info['kind'] == 'fallback':
        os.environ['BCC_KERNEL_SOURCE'] = info['path']
        return info, ('no kernel headers for %s; compiling with %s instead (XDP/TC probes only need the '
                      'stable UAPI headers)' % (info['release'], info.get('from', info['path'])))
    return info, None


# --- compile and load -------------------------------------------------------------------------


@contextlib.contextmanager
def captured_stderr():
    """bcc and clang print diagnostics and verifier logs on fd 2: collect them for the error message."""
    out = {'text': ''}
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out['text'] = tmp.read().decode('utf-8', 'replace')


def _c_string(value):
    return '"%s"' % value.replace('\\', '\\\\').replace('"', '\\"')


def _declared_features(bpf, fname):
    """The constant a marker function returns (r0 = imm; exit), read from its bytecode."""
    insns = bpf.dump_func(fname)
    for off in range(0, len(insns) - 7, 8):
        code, regs, _off, imm = struct.unpack_from('=BBhi', insns, off)
        if code == BPF_MOV64_IMM_R0 and regs & 0x0F == 0:
            return imm
    return 0


class LoadedProgram:
    """A probe program loaded, with its maps, kept alive until pinned."""

    def __init__(self, bpf, fd, info, maps, metrics, config_maps):
        self.bpf = bpf
        self.fd = fd
        self.info = info
        self.maps = maps
        self.metrics = metrics
        self.config_maps = config_maps

    def pin(self, prog_path, map_path):
        makedirs_private(os.path.dirname(prog_path))
        _bpf.obj_pin(self.fd, prog_path)
        for name, m in self.maps.items():
            path = map_path(name)
            makedirs_private(os.path.dirname(path))
            _bpf.obj_pin(m['fd'], path)

    def layouts(self):
        return dict((name, dict((k, v) for k, v in m.items() if k != 'fd')) for name, m in self.maps.items())

    def close(self):
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


def compile_probe(name, source, cflags, mode, slot, files, chain_pin, meta_pin):
    """Compile and load one probe for one chain slot. Raises NetprobeError with the compiler
    output or the verifier log when it fails; nothing is pinned or attached then."""
    bcc = import_bcc()
    with tempfile.TemporaryDirectory(prefix='netprobe-') as incdir:
        with open(os.path.join(incdir, 'netprobe.h'), 'w') as f:
            f.write(files['netprobe.h'])
        # bcc rewrites map accesses and finds programs in the main file only: the plumbing is inlined.
        text = '%s\n#line 1 "%s.c"\n%s\n#line 1 "netprobe_chain.c"\n%s\n' % (
            files['netprobe_chain.h'], name, source, files['netprobe_chain.c'])
        flags = ['-I' + incdir, '-DNP_MODE_%s' % mode.upper(), '-DNP_SLOT=%d' % slot,
                 '-DNP_CHAIN_SIZE=%d' % CHAIN_SIZE, '-DNP_CHAIN_PIN=%s' % _c_string(chain_pin),
                 '-DNP_META_PIN=%s' % _c_string(meta_pin), '-DNP_USES_META'] + list(cflags)
        with captured_stderr() as err:
            try:
                bpf = bcc.BPF(text=text, cflags=flags)
            except Exception:
                bpf = None
        if bpf is None:
            raise NetprobeError('probe %r does not compile:\n%s' % (name, err['text'].strip()),
                                compiler_output=err['text'])
    prog_type = bcc.BPF.XDP if mode == 'xdp' else bcc.BPF.SCHED_CLS
    fn, failure = None, ''
    with captured_stderr() as err:
        try:
            fn = bpf.load_func(ENTRY, prog_type)
        except Exception as e:
            failure = str(e)
    if fn is None:
        bpf.cleanup()
        log = err['text'].strip()
        raise NetprobeError('probe %r was rejected by the kernel verifier (%s):\n%s' % (name, failure, log),
                            verifier_log=log)

    maps, metrics, config_maps = {}, {}, []
    lib = bcc.libbcc.lib
    # bcc's bindings do not declare these two
    lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_ulonglong, [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    for i in range(lib.bpf_num_tables(bpf.module)):
        bname = lib.bpf_table_name(bpf.module, i)
        if bname.decode() in PLUMBING_MAPS:
            continue
        fd = lib.bpf_table_fd(bpf.module, bname)
        info = _bpf.map_info(fd)
        info.update(fd=fd, key_desc=lib.bpf_table_key_desc(bpf.module, bname).decode(),
                    leaf_desc=lib.bpf_table_leaf_desc(bpf.module, bname).decode())
        maps[bname.decode()] = info
    for i in range(lib.bpf_num_functions(bpf.module)):
        fname = lib.bpf_function_name(bpf.module, i).decode()
        if fname.startswith(METRIC_MARK):
            metrics[fname[len(METRIC_MARK):]] = _declared_features(bpf, fname)
        elif fname.startswith(CONFIG_MARK):
            config_maps.append(fname[len(CONFIG_MARK):])
    for declared in list(metrics) + config_maps:
        if declared not in maps:
            bpf.cleanup()
            raise NetprobeError('probe %r declares %r as a metric or config map, but it has no map of that name'
                                % (name, declared))
    return LoadedProgram(bpf, fn.fd, _bpf.prog_info(fn.fd), maps, metrics, sorted(config_maps))
