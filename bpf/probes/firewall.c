/* SPDX-License-Identifier: GPL-2.0 */
/*
 * firewall: ordered rules, first match wins, then the default action.
 *
 * A rule matches source and destination prefixes (IPv4 as IPv4-mapped IPv6,
 * so one rule layout serves both families), an L4 protocol and port ranges.
 * The rules live in two banks: the engine writes the idle bank, then flips
 * `active`, so a packet is always judged by one whole rule set.
 * Packets that are not IPv4/IPv6 are not judged: they pass.
 * See docs/probes/firewall.md.
 */
#include "netprobe.h"

#define FW_MAX_RULES 64

union fw_addr {
	__u8 b[16];
	__u32 w[4];
	__u64 q[2];
};

struct fw_rule {
	__u64 src[2];
	__u64 src_mask[2];
	__u64 dst[2];
	__u64 dst_mask[2];
	__u16 sport_min;
	__u16 sport_max;
	__u16 dport_min;
	__u16 dport_max;
	__u8 proto;   /* 0: any */
	__u8 ports;   /* 1: port ranges apply, so only TCP and UDP match */
	__u8 action;  /* 0: pass, 1: drop */
	__u8 pad[5];
};

struct fw_bank {
	__u32 rules;
	__u32 default_action;
};

BPF_ARRAY(rules, struct fw_rule, 2 * FW_MAX_RULES);
BPF_ARRAY(banks, struct fw_bank, 2);
BPF_ARRAY(active, __u32, 1);
NP_CONFIG(rules);
NP_CONFIG(banks);
NP_CONFIG(active);

/* hits[i]: packets rule i decided; hits[FW_MAX_RULES]: the default action */
BPF_PERCPU_ARRAY(hits, __u64, FW_MAX_RULES + 1);
NP_METRIC(hits, NP_EXPORT);

/* The packet's addresses as IPv6 (IPv4-mapped for IPv4). Returns -1 when not IP. */
static __always_inline int fw_addrs(struct np_packet *pkt, union fw_addr *src, union fw_addr *dst)
{
	struct iphdr *ip4 = pkt->ip4;
	struct ipv6hdr *ip6 = pkt->ip6;

	if (ip4) {
		src->q[0] = dst->q[0] = 0;
		src->w[2] = dst->w[2] = bpf_htonl(0xffff);
		src->w[3] = ip4->saddr;
		dst->w[3] = ip4->daddr;
		return 0;
	}
	if (ip6) {
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		return 0;
	}
	return -1;
}

static __always_inline int fw_match(struct fw_rule *r, union fw_addr *src, union fw_addr *dst,
				    struct np_packet *pkt)
{
	if ((src->q[0] & r->src_mask[0]) != r->src[0] || (src->q[1] & r->src_mask[1]) != r->src[1])
		return 0;
	if ((dst->q[0] & r->dst_mask[0]) != r->dst[0] || (dst->q[1] & r->dst_mask[1]) != r->dst[1])
		return 0;
	if (r->proto && r->proto != pkt->l4_proto)
		return 0;
	if (r->ports) {
		if (!pkt->tcp && !pkt->udp)
			return 0;
		if (pkt->sport < r->sport_min || pkt->sport > r->sport_max ||
		    pkt->dport < r->dport_min || pkt->dport > r->dport_max)
			return 0;
	}
	return 1;
}

static __always_inline void fw_hit(__u32 index)
{
	__u64 *n = hits.lookup(&index);

	if (n)
		*n += 1;
}

NP_PROBE(ctx)
{
	struct np_packet pkt;
	union fw_addr src, dst;
	struct fw_bank *bank;
	__u32 zero = 0, which, i;
	__u32 *act;

	if (np_parse(ctx, &pkt) < 0 || fw_addrs(&pkt, &src, &dst) < 0)
		return NP_PASS;

	act = active.lookup(&zero);
	which = act ? (*act & 1) : 0;
	bank = banks.lookup(&which);
	if (!bank)
		return NP_PASS;

#pragma clang loop unroll(disable)
	for (i = 0; i < FW_MAX_RULES; i++) {
		__u32 index = which * FW_MAX_RULES + i;
		struct fw_rule *r;

		if (i >= bank->rules)
			break;
		r = rules.lookup(&index);
		if (!r)
			break;
		if (fw_match(r, &src, &dst, &pkt)) {
			fw_hit(i);
			return r->action ? NP_DROP : NP_PASS;
		}
	}
	fw_hit(FW_MAX_RULES);
	return bank->default_action ? NP_DROP : NP_PASS;
}
