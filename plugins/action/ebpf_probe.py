# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase

from ansible_collections.netprobe.ebpf.plugins.plugin_utils._sources import bpf_files, resolve_code


class ActionModule(ActionBase):
    """Reads the probe's code and bpf/ on the controller, then runs the module on the target."""

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get('state', 'present') == 'present':
            resolve_code(self, args, 'probe %s' % args.get('name'))
        args['_netprobe_files'] = bpf_files()
        result.update(self._execute_module(module_name='netprobe.ebpf.ebpf_probe', module_args=args,
                                           task_vars=task_vars))
        return result
