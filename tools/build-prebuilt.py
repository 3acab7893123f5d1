"""Build the bundled probes' bytecode (bpf/prebuilt/<probe>.<mode>.json) from the C in bpf/ with bcc.

bpf/ stays the single source of truth: each image records the spec hash of the sources it was built
from (probe, netprobe.h and the plumbing), and tests/integration/test_bytecode.py fails when an image
no longer matches them. Run after changing anything in bpf/:  .venv/bin/python tools/build-prebuilt.py
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, '.cache', 'collections'))

from ansible_collections.netprobe.ebpf.plugins.module_utils import _compile  # noqa: E402

BPF = os.path.join(REPO, 'bpf')


def main():
    files = dict((n, open(os.path.join(BPF, n)).read()) for n in _compile.HEADER_FILES)
    _compile.prepare_headers()
    out = os.path.join(BPF, 'prebuilt')
    os.makedirs(out, exist_ok=True)
    for fname in sorted(os.listdir(os.path.join(BPF, 'probes'))):
        probe = fname[:-2]
        source = open(os.path.join(BPF, 'probes', fname)).read()
        for mode in ('xdp', 'tc'):
            spec = _compile.spec_hash(source, [], mode, files)
            image = _compile.build_image(probe, source, [], mode, files, spec)
            image.built_by = 'tools/build-prebuilt.py, %s' % image.built_by
            path = os.path.join(out, '%s.%s.json' % (probe, mode))
            with open(path, 'w') as f:
                json.dump(image.to_json(), f, indent=0, sort_keys=True)
                f.write('\n')
            print('%s: %d instructions, %d maps, image %s' % (path, len(image.insns) // 8, len(image.maps),
                                                              image.hash[:12]))


if __name__ == '__main__':
    main()
