"""On the controller: the engine's module_utils and tests/integration/tinybpf.py in one zip that the
guest puts on sys.path (one file to copy instead of a directory: every transfer costs under TCG).
Usage: attach_bundle.py <repository> <zip>"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys
import zipfile

repo, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, 'w') as z:
    for pkg in ('ansible_collections', 'ansible_collections/netprobe', 'ansible_collections/netprobe/ebpf',
                'ansible_collections/netprobe/ebpf/plugins', 'ansible_collections/netprobe/ebpf/plugins/module_utils'):
        z.writestr(pkg + '/__init__.py', '')
    mu = os.path.join(repo, 'plugins/module_utils')
    for f in sorted(os.listdir(mu)):
        if f.endswith('.py'):
            z.write(os.path.join(mu, f), 'ansible_collections/netprobe/ebpf/plugins/module_utils/' + f)
    z.write(os.path.join(repo, 'tests/integration/tinybpf.py'), 'tinybpf.py')
