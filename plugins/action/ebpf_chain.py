# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail

from ansible_collections.netprobe.ebpf.plugins.module_utils import _limits
from ansible_collections.netprobe.ebpf.plugins.plugin_utils._sources import ProbeAction, checked, resolve_code


class ActionModule(ProbeAction):
    """Reads each probe's code and bpf/ on the controller, then runs the module on the target."""

    module_name = 'netprobe.ebpf.ebpf_chain'

    def resolve(self, args):
        probes = args.get('probes') or []
        if not isinstance(probes, list):
            raise AnsibleActionFail('probes must be a list of probes, each with a name and its code')
        checked(_limits.check_probes, 'probes', probes)
        resolved = []
        for index, probe in enumerate(probes):
            if not isinstance(probe, dict):
                raise AnsibleActionFail('probes[%d] must be a dict with name and one of source, src, probe' % index)
            resolved.append(resolve_code(self, dict(probe), 'probes[%d] (%s)' % (index, probe.get('name'))))
        args['probes'] = resolved
