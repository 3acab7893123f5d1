# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_specs import BUNDLED
from ansible_collections.netprobe.ebpf.plugins.plugin_utils._sources import gadget_file, read_controller_file

HEADER = 'gadget.h'


class ActionModule(ActionBase):
    """Reads the gadget's C (bpf/gadgets/) or a tracer's src on the controller, then runs the module."""

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        files = {HEADER: gadget_file(HEADER)}
        tracer = args.get('tracer')
        if tracer is not None:
            if not isinstance(tracer, dict):
                raise AnsibleActionFail('tracer must be a dict: source or src, attach, fields')
            tracer = dict(tracer)
            if tracer.get('src') and tracer.get('source'):
                raise AnsibleActionFail('tracer: give source or src, not both')
            if tracer.get('src'):
                tracer['source'] = read_controller_file(self, tracer.pop('src'), 'tracer')
            args['tracer'] = tracer
        else:
            spec = BUNDLED.get(args.get('gadget'))
            if spec is not None and spec.source_file:
                files['source'] = gadget_file(spec.source_file)
        args['_netprobe_gadget_files'] = files
        result.update(self._execute_module(module_name='netprobe.ebpf.ebpf_gadget', module_args=args,
                                           task_vars=task_vars, wrap_async=self._task.async_val))
        return result
