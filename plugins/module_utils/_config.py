# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probe configuration: validated before anything changes, written into the probe's maps.

A configuration change is a map update, never a recompile.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def config_hash(config):
    return json.dumps(config, sort_keys=True) if config else ''


def validate(name, origin, config):
    """Check a probe's configuration; raise NetprobeError saying what to fix."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise NetprobeError('probe %s: config must be a dict' % name)
    return config


def apply(name, origin, config, maps):
    """Write config into the probe's maps. maps: {map name: {'fd': fd, layout keys...}}."""
    if not config:
        return
