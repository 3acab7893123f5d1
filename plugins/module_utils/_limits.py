# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounds on every input and every read, in one place.

The action plugins check them on the controller before anything is sent, and
the modules check them again (a direct module call has no action plugin).
Files are read with read_bounded: a regular file only, and never more than
its limit plus one byte, so even a file growing during the read is bounded.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

MIB = 1024 * 1024
MAX_SOURCE = MIB            # a probe's C code (source, or the src file)
MAX_CFLAGS = 64             # compiler flags per probe
MAX_CFLAG_LEN = 1024        # characters per flag
MAX_PROBES = 64             # probes in one chain (the PROG_ARRAY holds 64 slots)
MAX_CONFIG = 256 * 1024     # a probe's config, as JSON
MAX_LIST = 1024             # entries of a filter list (interfaces, probes, netns, gather_subset)
MAX_NAME = 255              # characters of a filter entry or a name
MAX_STATE_FILE = 8 * MIB    # a chain's metadata JSON under /run/netprobe
MAX_PROC_READ = 64 * 1024   # a /proc or /sys file the engine reads
LOCK_WAIT = 300             # seconds a run waits for another run's host lock


def _size(n):
    return '%d MiB' % (n // MIB) if n % MIB == 0 else ('%d KiB' % (n // 1024) if n % 1024 == 0 else '%d bytes' % n)


def read_bounded(path, limit, what):
    """Bytes of the regular file path, at most limit (else NetprobeError). Never opens a FIFO or a device."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise NetprobeError('%s %s cannot be read: %s' % (what, path, e.strerror or e))
    if not stat.S_ISREG(st.st_mode):
        raise NetprobeError('%s %s is not a regular file (%s): give the path of a file'
                            % (what, path, _kind(st.st_mode)))
    if st.st_size > limit:
        raise NetprobeError('%s %s is %d bytes; the limit is %s' % (what, path, st.st_size, _size(limit)))
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open does not hang
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    except OSError as e:
        raise NetprobeError('%s %s cannot be read: %s' % (what, path, e.strerror or e))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NetprobeError('%s %s is not a regular file: give the path of a file' % (what, path))
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b''.join(chunks)
    if len(data) > limit:
        raise NetprobeError('%s %s is larger than the limit of %s' % (what, path, _size(limit)))
    return data


def _kind(mode):
    for test, name in ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket')):
        if test(mode):
            return name
    return 'not a regular file'


def check_text(where, key, value, limit):
    if value is None:
        return
    if not isinstance(value, str):
        raise NetprobeError('%s: %s must be a string' % (where, key))
    size = len(value.encode('utf-8', 'surrogateescape'))
    if size > limit:
        raise NetprobeError('%s: %s is %d bytes; the limit is %s' % (where, key, size, _size(limit)))


def check_code(where, spec):
    """Bounds of one probe's code arguments (a dict with source, cflags, config)."""
    check_text(where, 'source', spec.get('source'), MAX_SOURCE)
    cflags = spec.get('cflags') or []
    if not isinstance(cflags, list):
        raise NetprobeError('%s: cflags must be a list of strings' % where)
    if len(cflags) > MAX_CFLAGS:
        raise NetprobeError('%s: %d cflags; the limit is %d' % (where, len(cflags), MAX_CFLAGS))
    for flag in cflags:
        if not isinstance(flag, str):
            raise NetprobeError('%s: every cflag must be a string (got %r)' % (where, type(flag).__name__))
        if len(flag) > MAX_CFLAG_LEN:
            raise NetprobeError('%s: a cflag of %d characters; the limit is %d' % (where, len(flag), MAX_CFLAG_LEN))
        if '\x00' in flag:
            raise NetprobeError('%s: a cflag contains a NUL character' % where)
    config = spec.get('config')
    if config is not None:
        try:
            size = len(json.dumps(config))
        except (TypeError, ValueError) as e:
            raise NetprobeError('%s: config is not plain data (%s)' % (where, e))
        if size > MAX_CONFIG:
            raise NetprobeError('%s: config is %d bytes as JSON; the limit is %s' % (where, size, _size(MAX_CONFIG)))


def check_probes(where, probes):
    if probes is not None and len(probes) > MAX_PROBES:
        raise NetprobeError('%s: %d probes; a chain holds at most %d' % (where, len(probes), MAX_PROBES))


def check_list(key, values):
    """Bounds of a filter list (ebpf_facts, ebpf_metrics_info)."""
    if values is None:
        return
    if len(values) > MAX_LIST:
        raise NetprobeError('%s: %d entries; the limit is %d' % (key, len(values), MAX_LIST))
    for v in values:
        if v is not None and len(str(v)) > MAX_NAME:
            raise NetprobeError('%s: an entry of %d characters; the limit is %d' % (key, len(str(v)), MAX_NAME))


def read_proc(path, limit=MAX_PROC_READ):
    """Text of a /proc or /sys file (their size reads as 0 or 4096), at most limit bytes."""
    return read_bounded(path, limit, 'kernel file').decode('utf-8', 'replace')
