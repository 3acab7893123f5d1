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

from ansible_collections.netprobe.ebpf.plugins.module_utils import _limits
from ansible_collections.netprobe.ebpf.plugins.module_utils._compile import HEADER_FILES
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.plugin_utils import _prebuilt

BPF_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..', 'bpf'))
PROBES_DIR = os.path.join(BPF_DIR, 'probes')
GADGETS_DIR = os.path.join(BPF_DIR, 'gadgets')
CODE_KEYS = ('source', 'src', 'probe')


def _read(path, what='file'):
    """A regular file of at most _limits.MAX_SOURCE bytes, as text."""
    try:
        data = _limits.read_bounded(path, _limits.MAX_SOURCE, what)
    except NetprobeError as e:
        raise AnsibleActionFail(e.msg)
    try:
        return to_text(data, errors='strict')
    except UnicodeError as e:
        raise AnsibleActionFail('%s %s is not UTF-8 text: %s' % (what, path, e))


def checked(fn, *args):
    """Run an _limits check on the controller; its NetprobeError becomes a task failure."""
    try:
        return fn(*args)
    except NetprobeError as e:
        raise AnsibleActionFail(e.msg)


def bpf_files():
    return dict((name, _read(os.path.join(BPF_DIR, name))) for name in HEADER_FILES)


def gadget_file(name):
    return _read(os.path.join(GADGETS_DIR, name))


def bundled_probes():
    return sorted(f[:-2] for f in os.listdir(PROBES_DIR) if f.endswith('.c'))


def read_controller_file(action, src, where):
    """Text of a file of the playbook (searched like copy's src: files/, the role, the playbook dir)."""
    try:
        path = action._find_needle('files', src)
    except Exception as e:
        raise AnsibleActionFail('%s: %s not found on the controller: %s' % (where, src, e))
    return _read(path, where)


def resolve_code(action, spec, where):
    """Fill spec['source'] from src (a controller file) or probe (a bundled probe)."""
    for key in CODE_KEYS:
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise AnsibleActionFail('%s: %s must be a string' % (where, key))
    given = [k for k in CODE_KEYS if spec.get(k)]
    if len(given) > 1:
        raise AnsibleActionFail('%s: give only one of source, src and probe (got %s)' % (where, ', '.join(given)))
    if spec.get('src'):
        spec['source'] = read_controller_file(action, spec['src'], '%s: src' % where)
    elif spec.get('probe'):
        available = bundled_probes()
        if spec['probe'] not in available:
            raise AnsibleActionFail('%s: unknown bundled probe %r; available: %s'
                                    % (where, spec['probe'], ', '.join(available)))
        spec['source'] = _read(os.path.join(PROBES_DIR, spec['probe'] + '.c'))
    checked(_limits.check_code, where, spec)
    return spec


class ProbeAction(ActionBase):
    """Base of the action plugins: resolve the probes' code on the controller, then run the module."""

    _supports_check_mode = True
    # async: a change that may cut the connection it would return over (confirm_within) is started with poll: 0
    _supports_async = True
    module_name = None

    def resolve(self, args):
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super(ProbeAction, self).run(tmp, task_vars)
        args = dict(self._task.args)
        self.resolve(args)
        args['_netprobe_files'] = bpf_files()
        args['_netprobe_images'] = _prebuilt.images(bundled_names(args))
        result.update(self._execute_module(module_name=self.module_name, module_args=args, task_vars=task_vars,
                                           wrap_async=self._task.async_val))
        strip_files(result)
        return result


def bundled_names(args):
    """The bundled probes a task uses (ebpf_probe's probe, ebpf_chain's probes[].probe)."""
    specs = [args] + [p for p in (args.get('probes') or []) if isinstance(p, dict)]
    return set(p['probe'] for p in specs if isinstance(p.get('probe'), str))


def strip_files(result):
    """The 9 KB of bpf/ C sent to the module are not worth keeping in every registered result."""
    module_args = (result.get('invocation') or {}).get('module_args')
    if isinstance(module_args, dict):
        module_args.pop('_netprobe_files', None)
        module_args.pop('_netprobe_images', None)
    return result
