# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.netprobe.ebpf.plugins.plugin_utils._sources import ProbeAction, resolve_code


class ActionModule(ProbeAction):
    """Reads the probe's code and bpf/ on the controller, then runs the module on the target."""

    module_name = 'netprobe.ebpf.ebpf_probe'

    def resolve(self, args):
        if args.get('state', 'present') == 'present':
            resolve_code(self, args, 'probe %s' % args.get('name'))
