# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a prerequisites check reads on a host, in the same module run as the restore's check (ebpf_restore's
`inspect`): the capabilities, which Debian packages are installed, which paths exist, a few small files.
Reads only; the prereqs role decides from it whether anything is to do (roles/prereqs/tasks/fast.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import os
import sys

from ansible_collections.netprobe.ebpf.plugins.module_utils import _capabilities

DPKG_STATUS = '/var/lib/dpkg/status'
MAX_FILE_BYTES = 1024 * 1024

INSPECT_OPTIONS = dict(
    capabilities=dict(type='bool', default=False),
    packages=dict(type='list', elements='str', default=[]),
    paths=dict(type='list', elements='path', default=[]),
    files=dict(type='list', elements='path', default=[]),
)


def dpkg_installed(names, status_path=DPKG_STATUS):
    """{name: bool}: True when dpkg has the package wanted and installed (dpkg-query's `ii`). An entry with a
    glob character (`linux-headers-*`) adds every installed package it matches, as True. Without a dpkg database
    every package is reported missing."""
    patterns = [n for n in names if any(c in n for c in '*?[')]
    wanted = dict((n, n.split(':', 1)[0]) for n in names if n not in patterns)
    found = set()
    matched = set()
    try:
        with open(status_path, 'r', encoding='utf-8', errors='replace') as f:
            text = f.read()
    except (IOError, OSError):
        text = ''
    bare = set(wanted.values())
    for stanza in text.split('\n\n'):
        package = status = None
        for line in stanza.splitlines():
            if line.startswith('Package: '):
                package = line[9:].strip()
            elif line.startswith('Status: '):
                status = line[8:].split()
        if not (package and status and status[0] == 'install' and status[-1] == 'installed'):
            continue
        if package in bare:
            found.add(package)
        if any(fnmatch.fnmatchcase(package, p) for p in patterns):
            matched.add(package)
    out = dict((n, bare_name in found) for n, bare_name in wanted.items())
    out.update((n, True) for n in matched)
    return out


def path_state(path):
    try:
        st = os.stat(path)
    except OSError:
        return {'exists': False, 'mtime': None, 'mode': None, 'uid': None, 'gid': None}
    return {'exists': True, 'mtime': st.st_mtime, 'mode': '%04o' % (st.st_mode & 0o7777), 'uid': st.st_uid,
            'gid': st.st_gid}


def file_text(path):
    """The file's text (UTF-8, at most MAX_FILE_BYTES), or None when it is missing, unreadable or larger."""
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (IOError, OSError):
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    return data.decode('utf-8', 'replace')


def inspect(options):
    out = {
        'python': sys.executable,
        'packages': dpkg_installed(options['packages']) if options['packages'] else {},
        'paths': dict((p, path_state(p)) for p in options['paths']),
        'files': dict((p, file_text(p)) for p in options['files']),
    }
    if options['capabilities']:
        out['capabilities'] = _capabilities.gather()
    return out
