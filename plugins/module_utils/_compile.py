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

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _image, _metrics
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._state import makedirs_private

CHAIN_SLOTS = 128     # PROG_ARRAY entries of a new chain: room for a chain and its rebuilt part
ENTRY = 'np_entry'
HEADER_FILES = ('netprobe.h', 'netprobe_chain.h', 'netprobe_chain.c')
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
    insns = bpf.dump_func(fname.encode())
    for off in range(0, len(insns) - 7, 8):
        code, regs, _off, imm = struct.unpack_from('=BBhi', insns, off)
        if code == BPF_MOV64_IMM_R0 and regs & 0x0F == 0:
            return imm
    return 0


def _table_names(bcc, bpf):
    lib = bcc.libbcc.lib
    # bcc's bindings do not declare these two
    lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_ulonglong, [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    return [lib.bpf_table_name(bpf.module, i) for i in range(lib.bpf_num_tables(bpf.module))]


def build_image(name, source, cflags, mode, files, spec):
    """Compile one probe with bcc into a program image (no program is loaded: the engine loads images).
    Raises NetprobeError with the compiler output when it does not compile."""
    bcc = import_bcc()
    with tempfile.TemporaryDirectory(prefix='netprobe-') as incdir:
        with open(os.path.join(incdir, 'netprobe.h'), 'w') as f:
            f.write(files['netprobe.h'])
        # bcc rewrites map accesses and finds programs in the main file only: the plumbing is inlined.
        text = '%s\n#line 1 "%s.c"\n%s\n#line 1 "netprobe_chain.c"\n%s\n' % (
            files['netprobe_chain.h'], name, source, files['netprobe_chain.c'])
        flags = ['-I' + incdir, '-DNP_MODE_%s' % mode.upper(), '-DNP_SLOT=%d' % _image.SLOT_SENTINEL,
                 '-DNP_CHAIN_SIZE=%d' % CHAIN_SLOTS, '-DNP_USES_META'] + list(cflags)
        with captured_stderr() as err:
            try:
                bpf = bcc.BPF(text=text.encode(), cflags=flags)
            except Exception:
                bpf = None
        if bpf is None:
            raise NetprobeError('probe %r does not compile:\n%s' % (name, err['text'].strip()),
                                compiler_output=err['text'])
    try:
        insns = bpf.dump_func(ENTRY.encode())
        lib = bcc.libbcc.lib
        maps, by_fd = [], {}
        for bname in _table_names(bcc, bpf):
            fd = lib.bpf_table_fd(bpf.module, bname)
            info = _bpf.map_info(fd)
            maps.append(_image.MapDef(bname.decode(), info['type'], info['key_size'], info['value_size'],
                                      info['max_entries'], info['flags'],
                                      lib.bpf_table_key_desc(bpf.module, bname).decode(),
                                      lib.bpf_table_leaf_desc(bpf.module, bname).decode()))
            by_fd[fd] = bname.decode()
        metrics, config_maps = {}, []
        for i in range(lib.bpf_num_functions(bpf.module)):
            fname = lib.bpf_function_name(bpf.module, i).decode()
            if fname.startswith(METRIC_MARK):
                metrics[fname[len(METRIC_MARK):]] = _declared_features(bpf, fname)
            elif fname.startswith(CONFIG_MARK):
                config_maps.append(fname[len(CONFIG_MARK):])
    finally:
        bpf.cleanup()
    names = set(m.name for m in maps)
    for declared, bits in sorted(metrics.items()):
        if bits & _metrics.NP_COUNTER and bits & (_metrics.NP_EMPTY | _metrics.NP_SWAP):
            raise NetprobeError('probe %r declares %r NP_COUNTER with NP_EMPTY or NP_SWAP: reads reset such a map, '
                                'so it holds interval counts, not counters; drop one of the two' % (name, declared))
    for declared in list(metrics) + config_maps:
        if declared not in names:
            raise NetprobeError('probe %r declares %r as a metric or config map, but it has no map of that name'
                                % (name, declared))
    slot_relocs = _image.find_slot_relocs(insns)  # none when the probe never continues (always drops)
    relocs = _image.find_map_relocs(insns, by_fd)
    insns = _image.without_fds(insns, relocs)  # this process's fd numbers are no part of the image
    kept = set(n for _i, n in relocs) | set(metrics) | set(config_maps)
    return _image.Image(mode, insns, [m for m in maps if m.name in kept], relocs, slot_relocs, metrics, config_maps,
                        spec, built_by='bcc %s' % _bcc_version(bcc))


def _bcc_version(bcc):
    return getattr(bcc, '__version__', '') or 'unknown'


class Images:
    """Where a probe's image comes from: shipped with the task (prebuilt bytecode), this host's cache,
    or a bcc compile (then cached). One compile per spec per host, whatever the number of interfaces."""

    def __init__(self, files, shipped=None, cache=None, can_compile=True):
        self.files = files
        self.shipped = shipped or {}
        self.cache = cache or _image.Cache()
        self.can_compile = can_compile  # False: bytecode only (a restore from a record never compiles)
        self.compiled = []      # (probe name, spec hash) compiled by this process
        self.warnings = []
        self._memo = {}

    def get(self, name, source, cflags, mode, spec=None):
        """(image, how): how is 'bytecode' (shipped), 'cached' or 'bcc'. spec: the spec hash a probe was
        built with, tried first (a probe kept in a chain while the collection's headers changed)."""
        for wanted in ([spec] if spec else []) + [spec_hash(source, cflags, mode, self.files)]:
            found = self._find(name, wanted)
            if found is not None:
                return found
        wanted = spec_hash(source, cflags, mode, self.files)
        self._memo[wanted] = (self._build(name, source, cflags, mode, wanted), 'bcc')
        return self._memo[wanted]

    def known(self, spec):
        """The image of this spec when one is at hand without a compile (this run's, shipped, cached), else []."""
        try:
            found = self._find('of spec %s' % spec[:12], spec)
        except NetprobeError:
            return []
        return [found[0]] if found else []

    def _find(self, name, spec):
        if spec in self._memo:
            image, how = self._memo[spec]
            return image, 'cached' if how == 'bcc' else how
        if spec in self.shipped:
            found = (_image.Image.loads(self.shipped[spec], 'shipped for probe %r' % name), 'bytecode')
            self._keep(found[0])  # a later copy of it (a neighbour's move) may not have it shipped
        else:
            try:
                image = self.cache.get(spec)
            except NetprobeError as e:
                self.warnings.append('%s; compiling again' % e.msg)
                image = None
            found = (image, 'cached') if image is not None else None
        if found is not None:
            if found[0].spec_hash != spec:
                raise NetprobeError('bytecode for probe %r was built from another source (spec %s, expected %s): '
                                    'refused, not loaded' % (name, found[0].spec_hash, spec))
            self._memo[spec] = found
        return found

    def _build(self, name, source, cflags, mode, spec):
        if not self.can_compile:
            raise NetprobeError('probe %r has no bytecode for spec %s here, and this run loads bytecode only (it never '
                                'compiles): nothing of this chain was changed' % (name, spec[:12]))
        try:
            import_bcc()
        except MissingLibrary:
            raise NetprobeError('probe %r needs a compile, and this host has no bcc (no compiler): build it where '
                                'bcc is installed (any host running the same task caches it in %s; copy that '
                                'file here), use a bundled probe (prebuilt bytecode), or install bcc '
                                '(netprobe.ebpf.prereqs with prereqs_compiler: bcc)%s'
                                % (name, _image.CACHE_DIR, ''.join('. Also: ' + w for w in self.warnings)))
        _headers, warning = prepare_headers()
        if warning and warning not in self.warnings:
            self.warnings.append(warning)
        image = build_image(name, source, cflags, mode, self.files, spec)
        self.compiled.append(name)
        self._keep(image)
        return image

    def _keep(self, image):
        if os.path.exists(self.cache.path(image.spec_hash)):
            return
        try:
            self.cache.put(image)
        except OSError as e:
            self.warnings.append('bytecode cache not writable (%s): the next run compiles again' % e)
