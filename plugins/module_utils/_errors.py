# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class NetprobeError(Exception):
    """An error the user can act on. Modules turn it into fail_json(msg=..., **details)."""

    def __init__(self, msg, **details):
        super(NetprobeError, self).__init__(msg)
        self.msg = msg
        self.details = details
