# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side: bring the C of bpf/ and of `src` files to the module as arguments.

Only a module and its module_utils travel to the target, so the action plugins
read bpf/ (the single source of truth) here and send the text along.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.netprobe.ebpf.plugins.module_utils._compile import HEADER_FILES
from ansible_collections.netprobe.ebpf.plugins.plugin_utils import _prebuilt

BPF_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..', 'bpf'))
PROBES_DIR = os.path.join(BPF_DIR, 'probes')
CODE_KEYS = ('source', 'src', 'probe')


def _read(path):
    with open(path, 'rb') as f:
        return to_text(f.read(), errors='surrogate_or_strict')


def bpf_files():
    return dict((name, _read(os.path.join(BPF_DIR, name))) for name in HEADER_FILES)


def bundled_probes():
    return sorted(f[:-2] for f in os.listdir(PROBES_DIR) if f.endswith('.c'))


def resolve_code(action, spec, where):
    """Fill spec['source'] from src (a controller file) or probe (a bundled probe)."""
    given = [k for k in CODE_KEYS if spec.get(k)]
    if len(given) > 1:
        raise AnsibleActionFail('%s: give only one of source, src and probe (got %s)' % (where, ', '.join(given)))
    if spec.get('src'):
        try:
            path = action._find_needle('files', spec['src'])
        except Exception as e:
            raise AnsibleActionFail('%s: src %s not found on the controller: %s' % (where, spec['src'], e))
        spec['source'] = _read(path)
    elif spec.get('probe'):
        available = bundled_probes()
        if spec['probe'] not in available:
            raise AnsibleActionFail('%s: unknown bundled probe %r; available: %s'
                                    % (where, spec['probe'], ', '.join(available)))
        spec['source'] = _read(os.path.join(PROBES_DIR, spec['probe'] + '.c'))
        action.bundled_used.add(spec['probe'])
    return spec


class ProbeAction(ActionBase):
    """Base of the action plugins: resolve the probes' code on the controller, then run the module."""

    _supports_check_mode = True
    _supports_async = False
    module_name = None
    bundled_used = None

    def resolve(self, args):
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super(ProbeAction, self).run(tmp, task_vars)
        args = dict(self._task.args)
        self.bundled_used = set()
        self.resolve(args)
        args['_netprobe_files'] = bpf_files()
        args['_netprobe_images'] = _prebuilt.images(self.bundled_used)
        result.update(self._execute_module(module_name=self.module_name, module_args=args, task_vars=task_vars))
        return result
