# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side: the prebuilt bytecode of bundled probes (bpf/prebuilt/, made by tools/build-prebuilt.py).

The target loads them without a compiler when their spec hash matches what it
would compile; otherwise (other cflags, edited headers) it compiles as usual.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible.errors import AnsibleActionFail

PREBUILT_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..', 'bpf', 'prebuilt'))
MODES = ('xdp', 'tc')
MAX_BYTES = 8 << 20


def images(probes):
    """{spec hash: image text} for each bundled probe named in probes, both modes, where prebuilt."""
    found = {}
    for probe in sorted(probes):
        for mode in MODES:
            path = os.path.join(PREBUILT_DIR, '%s.%s.json' % (probe, mode))
            if not os.path.isfile(path):
                continue
            with open(path, 'rb') as f:
                text = f.read(MAX_BYTES + 1)
            try:
                if len(text) > MAX_BYTES:
                    raise ValueError('larger than %d bytes' % MAX_BYTES)
                found[json.loads(text)['spec_hash']] = text.decode()
            except (ValueError, KeyError, UnicodeDecodeError) as e:
                raise AnsibleActionFail('prebuilt bytecode %s is damaged (%s): rebuild it with '
                                        'tools/build-prebuilt.py' % (path, e))
    return found
