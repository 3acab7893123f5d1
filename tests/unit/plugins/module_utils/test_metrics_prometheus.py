# -*- coding: utf-8 -*-
"""The Prometheus text exposition (_metrics.prometheus_text): counter families from NP_COUNTER maps, gauges for
the rest, label sets that a patch of a probe does not change, and the format itself, checked by a strict parser
(prometheus_client is not in the venv; the parser below refuses what the 0.0.4 text format does not allow).
tests/integration/test_facts.py runs the same parser on a textfile written from a real chain."""

import copy
import json
import math
import os
import re

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _metrics

METRIC_NAME = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*$')
LABEL_NAME = re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*$')
TYPES = ('counter', 'gauge', 'histogram', 'summary', 'untyped')
_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))


def _unescape(value):
    return re.sub(r'\\(.)', lambda m: {'n': '\n', '\\': '\\', '"': '"'}[m.group(1)], value)


def parse_exposition(text):
    """{family: {'type', 'help', 'samples': [(labels dict, value)]}}, in the order of the text. Fails (AssertionError)
    on anything the format forbids or node_exporter's textfile collector refuses: a family without HELP and TYPE
    before its samples, a second HELP or TYPE, a family's samples not contiguous, a sample of another name than its
    family, a counter family not ending in _total, bad names, bad escapes, a label twice, a series twice, a value
    that is not a number, a missing final newline."""
    assert text.endswith('\n'), 'the exposition must end with a newline'
    families, current, series = {}, None, set()
    for number, line in enumerate(text[:-1].split('\n'), 1):
        where = 'line %d: %r' % (number, line)
        assert line, '%s: empty line' % where
        if line.startswith('#'):
            parts = line.split(' ', 3)
            assert len(parts) >= 3 and parts[0] == '#' and parts[1] in ('HELP', 'TYPE'), where
            name = parts[2]
            assert METRIC_NAME.match(name), '%s: bad metric name' % where
            fam = families.setdefault(name, {'type': None, 'help': None, 'samples': [], 'closed': False})
            assert not fam['closed'] and not fam['samples'], '%s: HELP/TYPE after the samples of %s' % (where, name)
            if current is not None and current != name:
                families[current]['closed'] = True
            current = name
            if parts[1] == 'HELP':
                assert fam['help'] is None, '%s: second HELP' % where
                assert len(parts) == 4 and parts[3], '%s: empty HELP' % where
                assert not re.search(r'\\[^\\n]', parts[3]), '%s: bad escape in HELP' % where
                fam['help'] = parts[3]
            else:
                assert fam['type'] is None, '%s: second TYPE' % where
                assert len(parts) == 4 and parts[3] in TYPES, '%s: bad TYPE' % where
                fam['type'] = parts[3]
            continue
        m = _SAMPLE.match(line)
        assert m, '%s: not a sample' % where
        name, labels_text, value = m.groups()
        assert name == current, '%s: sample of %s outside its family block (%s)' % (where, name, current)
        fam = families[name]
        assert fam['help'] is not None and fam['type'] is not None, '%s: no HELP and TYPE before it' % where
        labels, pos = {}, 0
        while labels_text and pos < len(labels_text):
            lm = _LABEL.match(labels_text, pos)
            assert lm, '%s: bad label at %d' % (where, pos)
            assert lm.group(1) not in labels, '%s: label %s twice' % (where, lm.group(1))
            assert not lm.group(1).startswith('__'), '%s: reserved label name' % where
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
            assert lm.group(3) or pos == len(labels_text), where
        number_value = float(value)  # ValueError on anything else
        assert not math.isnan(number_value), where
        key = (name, tuple(sorted(labels.items())))
        assert key not in series, '%s: the same series twice' % where
        series.add(key)
        fam['samples'].append((labels, number_value))
    for name, fam in families.items():
        assert fam['type'] and fam['help'], '%s: HELP and TYPE are both required' % name
        if fam['type'] == 'counter':
            assert name.endswith('_total'), '%s: a counter name ends in _total' % name
            assert all(v >= 0 for _l, v in fam['samples']), '%s: a counter is never negative' % name
            assert name[:-len('_total')] not in families, '%s reads as another family' % name
        fam.pop('closed')
    return families


def label_sets(families):
    """Every series' identity: family and label set, values left out."""
    return set((name, tuple(sorted(labels.items()))) for name, fam in families.items() for labels, _v in fam['samples'])


def chain(netns='lab-b', interface='vb', probes=(('count', 1, 'aa' * 32),), **extra):
    out = {'netns': netns, 'interface': interface, 'hook': 'ingress', 'mode': 'xdp', 'attached': True, 'drift': [],
           'probes': [{'name': n, 'position': i, 'prog_id': prog_id, 'tag': 'deadbeef%08x' % prog_id,
                       'source_hash': source_hash} for i, (n, prog_id, source_hash) in enumerate(probes)]}
    out.update(extra)
    return out


def metric(probe, name, features, entries, netns='lab-b', interface='vb'):
    return {'netns': netns, 'netns_id': 4026532809, 'interface': interface, 'hook': 'ingress', 'mode': 'xdp',
            'probe': probe, 'map': name, 'type': 'percpu_hash', 'features': features, 'max_entries': 256,
            'count': len(entries), 'read': 'peek', 'method': 'batch', 'entries': entries}


BY_PROTO = [{'key': {'l3_proto': 2048, 'l4_proto': 17}, 'value': {'packets': 137, 'bytes': 10138}},
            {'key': {'l3_proto': 34525, 'l4_proto': 58}, 'value': {'packets': 2, 'bytes': 180}}]
WHERE = {'netns': 'lab-b', 'interface': 'vb', 'hook': 'ingress', 'mode': 'xdp'}


def test_counter_map_fields_are_counter_families_and_other_maps_stay_gauges():
    text = _metrics.prometheus_text([chain()], [
        metric('count', 'by_proto', ['export', 'counter'], BY_PROTO),
        metric('count', 'summary', ['export'], [{'key': 0, 'value': {'packets': 5, 'label': 'v4'}}]),
    ])
    fams = parse_exposition(text)
    packets = fams['netprobe_by_proto_packets_total']
    assert packets['type'] == 'counter' and 'by_proto.packets' in packets['help']
    labels = dict(WHERE, probe='count', map='by_proto', key_l3_proto='2048', key_l4_proto='17')
    assert (labels, 137) in packets['samples'] and len(packets['samples']) == 2
    assert (labels, 10138) in fams['netprobe_by_proto_bytes_total']['samples']
    assert '# TYPE netprobe_by_proto_packets_total counter\n' in text
    assert ('netprobe_by_proto_packets_total{netns="lab-b",interface="vb",hook="ingress",mode="xdp",probe="count",'
            'map="by_proto",key_l3_proto="2048",key_l4_proto="17"} 137\n') in text
    # the gauge keeps its family and its field label; a counter field never appears in it
    gauge = fams['netprobe_map_value']
    assert gauge['type'] == 'gauge'
    assert gauge['samples'] == [(dict(WHERE, probe='count', map='summary', key='0', field='packets'), 5)]
    assert fams['netprobe_map_entries']['type'] == 'gauge'
    assert [(l['map'], v) for l, v in fams['netprobe_map_entries']['samples']] == [('by_proto', 2), ('summary', 1)]
    # every family but the counters is a gauge
    assert set(n for n, f in fams.items() if f['type'] == 'counter') == set([
        'netprobe_by_proto_packets_total', 'netprobe_by_proto_bytes_total'])


@pytest.mark.parametrize('features', [['export', 'counter', 'empty'], ['export', 'counter', 'swap'], ['export']])
def test_a_map_reset_by_reads_is_never_a_counter(features):
    fams = parse_exposition(_metrics.prometheus_text([], [metric('count', 'by_proto', features, BY_PROTO)]))
    assert not [n for n in fams if n.endswith('_total')]
    assert fams['netprobe_map_value']['type'] == 'gauge' and len(fams['netprobe_map_value']['samples']) == 4
    assert _metrics.is_counter(features) is False
    assert _metrics.is_counter(['export', 'counter']) and _metrics.is_counter(['export', 'sorted', 'counter'])


@pytest.mark.parametrize('map_name, field, name', [
    ('by_proto', 'packets', 'netprobe_by_proto_packets_total'),
    ('hits', '', 'netprobe_hits_total'),                        # a scalar value
    ('stats', 'rx_drops', 'netprobe_stats_rx_drops_total'),       # a nested field, joined with _
    ('counts', '3', 'netprobe_counts_3_total'),                   # an array element
    ('bytes_total', '', 'netprobe_bytes_total'),                  # no _total_total
    ('chain', 'attached', 'netprobe_chain_attached_counter_total'),  # would read as the engine's own gauge
    ('map', 'value', 'netprobe_map_value_counter_total'),
])
def test_counter_naming_rule(map_name, field, name):
    assert _metrics.counter_name(map_name, field) == name
    assert METRIC_NAME.match(name)


def test_patching_a_probe_changes_no_label_set():
    """prog_id, tag and source_hash change with every patch: they are in the facts, in no label."""
    metrics = [metric('count', 'by_proto', ['export', 'counter'], BY_PROTO),
               metric('fw', 'hits', ['export', 'counter'], [{'key': 0, 'value': 4}, {'key': 64, 'value': 9}])]
    before = _metrics.prometheus_text([chain(probes=(('count', 11, 'aa' * 32), ('fw', 12, 'bb' * 32)))], metrics)
    patched = copy.deepcopy(metrics)
    for m in patched:
        for e in m['entries']:
            e['value'] = dict((k, v + 1) for k, v in e['value'].items()) if isinstance(e['value'], dict) else e['value'] + 1
    after = _metrics.prometheus_text([chain(probes=(('count', 21, 'cc' * 32), ('fw', 22, 'dd' * 32)))], patched)
    assert before != after
    assert label_sets(parse_exposition(before)) == label_sets(parse_exposition(after))
    for text in (before, after):
        assert 'prog_id' not in text and 'tag=' not in text and 'source_hash' not in text
    info = parse_exposition(before)['netprobe_probe_info']['samples']
    assert info == [(dict(WHERE, probe='count'), 1), (dict(WHERE, probe='fw'), 1)]
    assert parse_exposition(before)['netprobe_probe_position']['samples'] == [
        (dict(WHERE, probe='count'), 0), (dict(WHERE, probe='fw'), 1)]
    assert parse_exposition(before)['netprobe_hits_total']['samples'] == [
        (dict(WHERE, probe='fw', map='hits', key='0'), 4), (dict(WHERE, probe='fw', map='hits', key='64'), 9)]


def test_a_probe_inserted_in_front_moves_only_a_value():
    one = parse_exposition(_metrics.prometheus_text([chain(probes=(('count', 1, 'aa'),))], []))
    two = parse_exposition(_metrics.prometheus_text([chain(probes=(('fw', 2, 'bb'), ('count', 1, 'aa')))], []))
    assert (dict(WHERE, probe='count'), 1) in two['netprobe_probe_info']['samples']
    assert one['netprobe_probe_info']['samples'][0] in two['netprobe_probe_info']['samples']
    assert (dict(WHERE, probe='count'), 1) in two['netprobe_probe_position']['samples']


def test_families_stay_contiguous_across_chains_probes_and_maps():
    """Two chains, each with counter and gauge maps, one family shared by two probes: one HELP and TYPE per family,
    each family's samples together (the parser refuses anything else), every sample there."""
    chains = [chain('lab-a', 'va', probes=(('count', 1, 'aa'), ('fw', 2, 'bb'))),
              chain('lab-b', 'vb', probes=(('count', 3, 'aa'),), cost={'ns_per_run': 41.5, 'runs_per_second': 10.0})]
    metrics = []
    for netns, interface in (('lab-a', 'va'), ('lab-b', 'vb')):
        metrics.append(metric('count', 'by_proto', ['export', 'counter'], BY_PROTO, netns, interface))
        metrics.append(metric('count', 'private_gauge', ['export'], [{'key': 1, 'value': 7}], netns, interface))
        metrics.append(metric('count2', 'by_proto', ['export', 'sorted', 'counter'], BY_PROTO[:1], netns, interface))
    text = _metrics.prometheus_text(chains, metrics)
    fams = parse_exposition(text)
    assert len(fams['netprobe_by_proto_packets_total']['samples']) == 6
    assert len(fams['netprobe_map_value']['samples']) == 2
    assert len(fams['netprobe_chain_attached']['samples']) == 2
    assert fams['netprobe_chain_cost_ns_per_packet']['samples'] == [(dict(WHERE), 41.5)]
    assert text.count('# TYPE netprobe_by_proto_packets_total ') == 1
    # deterministic: the same input writes the same file (the textfile is written only when it differs)
    assert _metrics.prometheus_text(copy.deepcopy(chains), copy.deepcopy(metrics)) == text


def test_label_values_are_escaped_and_odd_leaves_skipped():
    entries = [{'key': {'comm': 'a"b\\c\nd', 'saddr': '198.18.0.1'}, 'value': {'packets': 3, 'name': 'x', 'ok': True}}]
    fams = parse_exposition(_metrics.prometheus_text([], [metric('p', 'odd-map', ['export', 'counter'], entries)]))
    assert fams['netprobe_odd_map_packets_total']['samples'] == [
        (dict(WHERE, probe='p', map='odd-map', key_comm='a"b\\c\nd', key_saddr='198.18.0.1'), 3)]
    assert fams['netprobe_odd_map_ok_total']['samples'][0][1] == 1  # a bool is a number; a string is no sample
    assert 'netprobe_odd_map_name_total' not in fams


def test_two_leaves_rendered_alike_give_one_series():
    """x.y and x_y flatten to the same name: a second identical series would make node_exporter refuse the file."""
    entries = [{'key': 0, 'value': {'x': {'y': 1}, 'x_y': 2}}]
    fams = parse_exposition(_metrics.prometheus_text([], [metric('p', 'm', ['export', 'counter'], entries)]))
    assert fams['netprobe_m_x_y_total']['samples'] == [(dict(WHERE, probe='p', map='m', key='0'), 1)]


def test_the_checker_refuses_what_the_format_forbids():
    good = '# HELP a_total x\n# TYPE a_total counter\na_total{k="1"} 1\n'
    parse_exposition(good)
    for bad in (good[:-1],                                                       # no final newline
                good + '# HELP a_total y\n',                                       # second HELP
                '# TYPE a_total counter\na_total 1\n',                           # no HELP
                '# HELP a x\n# TYPE a counter\na 1\n',                           # counter without _total
                good + '# HELP b x\n# TYPE b gauge\nb 1\na_total{k="2"} 1\n',   # family not contiguous
                good + 'a_total{k="1"} 2\n',                                     # the same series twice
                '# HELP a x\n# TYPE a gauge\na{k="1",k="2"} 1\n',                # a label twice
                '# HELP a x\n# TYPE a gauge\na{k="\\x"} 1\n',                    # bad escape
                '# HELP a x\n# TYPE a gauge\na{k="1"} one\n'):                   # not a number
        with pytest.raises((AssertionError, ValueError)):
            parse_exposition(bad)


def test_bundled_probes_declare_counters_truthfully():
    """Every bundled probe's exported map only ever adds to its numeric fields (bpf/probes/*.c): counters, none of
    them reset by reads. The shipped images carry the same declarations (test_bytecode checks they match the C)."""
    prebuilt = os.path.join(REPO, 'bpf', 'prebuilt')
    declared = {}
    for fname in sorted(os.listdir(prebuilt)):
        with open(os.path.join(prebuilt, fname)) as f:
            for name, bits in json.load(f)['metrics'].items():
                declared[(fname.split('.')[0], name)] = bits
    assert declared, prebuilt
    for (probe, name), bits in declared.items():
        features = _metrics.features_list(bits)
        if bits & _metrics.NP_EXPORT:
            assert _metrics.is_counter(features), (probe, name, features)
        assert not (bits & _metrics.NP_COUNTER and bits & (_metrics.NP_EMPTY | _metrics.NP_SWAP)), (probe, name)
    assert _metrics.features_list(declared[('counter', 'by_proto')]) == ['export', 'counter']
    assert _metrics.features_list(declared[('top_talkers', 'flows')]) == ['export', 'sorted', 'counter']
