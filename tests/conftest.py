import os
import sys

# The collection is importable as ansible_collections.netprobe.ebpf through the symlink tools/setup.sh makes.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, '.cache', 'collections'))
