# -*- coding: utf-8 -*-
"""The event relay's pure logic: its settings and their bounds, the spool a reconnecting source resumes from
(order, rotation, a spool that was lost), threshold crossings, prefixes of LPM keys, and the decoding of the
bundled probes' messages. The kernel path (rings, ssh, a killed connection, a flood) is
tests/integration/test_event_source.py."""

import json
import os
import struct

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _event_relay, _probe_events
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


class Sink:
    """Output stand-in: keeps the lines."""

    def __init__(self):
        self.lines = []
        self.pending = b''
        self.full = False

    def send(self, line):
        self.lines.append(json.loads(line))

    def flush(self):
        pass


def relay(tmp_path, **settings):
    cfg = _event_relay.Config.from_json(dict(dict(source_id='t'), **settings))
    spool = _event_relay.Spool(cfg.source_id, cfg.spool_bytes, directory=str(tmp_path))
    return _event_relay.Relay(cfg, Sink(), spool)


def events_of(r):
    return [line['event'] for line in r.out.lines if 'event' in line]


def test_settings_are_checked_with_their_bounds():
    cfg = _event_relay.Config.from_json({'source_id': 'eda', 'interval': 0.5, 'thresholds': [{'map': 'm', 'above': 3}]})
    assert cfg.interval == 0.5 and cfg.thresholds[0] == _event_relay.Threshold('m', 3.0, 10.0)
    for bad, words in (({'source_id': '../x'}, 'source id'), ({'source_id': 'a', 'interval': 0}, 'interval'),
                       ({'source_id': 'a', 'max_events_per_second': 10 ** 6}, 'max_events_per_second'),
                       ({'source_id': 'a', 'thresholds': [{'map': 'm'}]}, 'above'),
                       ({'source_id': 'a', 'thresholds': [{'map': 'm', 'above': 1, 'x': 1}]}, 'unknown keys x'),
                       ({'source_id': 'a', 'thresholds': [{'map': 'm', 'above': 'lots'}]}, 'numbers')):
        with pytest.raises(NetprobeError) as e:
            _event_relay.Config.from_json(bad)
        assert words in e.value.msg


def test_a_reconnecting_source_gets_what_followed_its_last_event_once_and_in_order(tmp_path):
    first = relay(tmp_path)
    first.resume()
    for i in range(5):
        first.emit({'type': 'probe_event', 'n': i})
    epoch = first.spool.epoch
    first.spool.close()
    again = relay(tmp_path, epoch=epoch, since=2)
    again.resume()
    replayed = [line for line in again.out.lines if 'event' in line]
    assert [line['seq'] for line in replayed] == [3, 4, 5] and [e['event']['n'] for e in replayed] == [2, 3, 4]
    assert again.out.lines[-1]['hello'] == {'epoch': epoch, 'seq': 5, 'pid': os.getpid()}
    again.emit({'type': 'x'})
    assert again.out.lines[-1]['seq'] == 6  # numbering goes on


def test_a_first_connection_starts_from_now_and_a_lost_spool_is_a_gap(tmp_path):
    r = relay(tmp_path)
    r.resume()
    r.emit({'type': 'old'})
    r.spool.close()
    fresh = relay(tmp_path)
    fresh.resume()
    assert not events_of(fresh)  # what an earlier run of the source got is not sent again
    fresh.spool.close()
    reset = relay(tmp_path, epoch='someotherspool', since=40)
    reset.resume()
    gaps = [e for e in events_of(reset) if e['type'] == 'gap']
    assert len(gaps) == 1 and 'lost the spool' in gaps[0]['reason']


def test_the_spool_is_bounded_and_says_how_many_events_it_no_longer_holds(tmp_path):
    r = relay(tmp_path, spool_bytes=64 * 1024)
    r.resume()
    for i in range(2000):
        r.emit({'type': 'probe_event', 'pad': 'x' * 64, 'n': i})
    assert sum(os.path.getsize(f) for f in r.spool.files if os.path.exists(f)) <= 64 * 1024
    epoch = r.spool.epoch
    r.spool.close()
    back = relay(tmp_path, epoch=epoch, since=10, spool_bytes=64 * 1024)
    back.resume()
    gap = [e for e in events_of(back) if e['type'] == 'gap'][0]
    seqs = [line['seq'] for line in back.out.lines if 'event' in line and line['event']['type'] != 'gap']
    assert seqs == list(range(seqs[0], 2001)) and gap['missed'] == seqs[0] - 11


def test_a_second_relay_of_the_same_source_is_refused(tmp_path):
    r = relay(tmp_path)
    with pytest.raises(NetprobeError) as e:
        relay(tmp_path)
    assert 'another relay of source t' in e.value.msg
    r.spool.close()


def test_threshold_goes_above_then_quiet_after_its_quiet_period(tmp_path, monkeypatch):
    r = relay(tmp_path, thresholds=[{'map': 'dropped', 'above': 10, 'quiet_for': 5}])
    clock = [100.0]
    monkeypatch.setattr(_event_relay.time, 'monotonic', lambda: clock[0])
    key = {'prefixlen': 128, 'addr': '::ffff:198.18.9.9'}

    def read(value):
        r._thresholds([{'map': 'dropped', 'probe': 'ddos', 'netns': 'host', 'netns_id': 1, 'interface': 'eth0',
                        'hook': 'ingress', 'mode': 'xdp', 'entries': [{'key': key, 'value': value}]}])
        clock[0] += 1

    for value in (0, 5, 100, 300, 300, 300, 300, 300, 300, 300):
        read(value)
    states = [(e['state'], e['rate']) for e in events_of(r)]
    assert states == [('above', 95.0), ('quiet', 0.0)], states
    assert events_of(r)[0]['key']['prefix'] == '198.18.9.9/32'


def test_lpm_keys_get_the_prefix_a_probe_config_takes():
    assert _event_relay._with_prefix({'prefixlen': 120, 'addr': '::ffff:198.18.9.0'})['prefix'] == '198.18.9.0/24'
    assert _event_relay._with_prefix({'prefixlen': 64, 'addr': '2001:db8::'})['prefix'] == '2001:db8::/64'
    assert _event_relay._with_prefix({'addr': 'x'}) == {'addr': 'x'}


def test_bundled_messages_decode_into_fields_and_others_stay_raw():
    payload = bytes(10) + b'\xff\xff' + bytes([198, 18, 9, 9]) + struct.pack('=QQ', 300, 60 * 10 ** 9)
    assert _probe_events.decode('ddos_mitigator', 16, payload) == (
        'source_blocked', {'source': '198.18.9.9', 'threshold_pps': 300, 'hold_seconds': 60.0})
    assert _probe_events.decode('ddos_mitigator', 16, payload[:20]) == (None, None)
    assert _probe_events.decode(None, 16, payload) == (None, None)


def test_drift_is_said_when_it_changes_and_a_gone_chain_keeps_its_names(tmp_path):
    r = relay(tmp_path)
    chain = {'netns_id': 7, 'netns': 'web', 'interface': 'eth0', 'hook': 'ingress', 'mode': 'xdp', 'attached': True,
             'drift': [], 'probes': [{'name': 'fw'}]}
    r._drift([chain])
    r._drift([dict(chain, attached=False, drift=['program detached'])])
    r._drift([dict(chain, attached=False, drift=['program detached'])])
    r._drift([])
    said = [(e['drift'], e['chain']) for e in events_of(r)]
    view = {'netns': 'web', 'interface': 'eth0', 'hook': 'ingress', 'mode': 'xdp'}
    assert said == [(['program detached'], view), (['the chain is gone (removed, or its namespace deleted)'], view)]
