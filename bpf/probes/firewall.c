/* SPDX-License-Identifier: GPL-2.0 */
/*
 * firewall: ordered rules, first match wins, then the default action.
 *
 * A rule matches source and destination prefixes (IPv4 as IPv4-mapped IPv6,
 * so one rule layout serves both families), an L4 protocol and port ranges.
 * The rules live in two banks: the engine writes the idle bank, then flips
 * `active`, so a packet is always judged by one whole rule set.
 * Packets that are not IPv4/IPv6 are not judged: they pass.
 * A rule with `established` asks the kernel's socket table whether the packet
 * belongs to a connection of this host (fw_local_connection).
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
	__u8 established; /* 0: any packet, 1: only packets of a local connection, 2: only the others */
	__u8 pad[4];
};

struct fw_bank {
	__u32 rules;
	__u32 default_action;
	__u32 established;  /* 1: a rule of this bank has `established`: look the packet's socket up */
};

BPF_ARRAY(rules, struct fw_rule, 2 * FW_MAX_RULES);
BPF_ARRAY(banks, struct fw_bank, 2);
BPF_ARRAY(active, __u32, 1);
NP_CONFIG(rules);
NP_CONFIG(banks);
NP_CONFIG(active);

/* hits[i]: packets rule i decided; hits[FW_MAX_RULES]: the default action */
BPF_PERCPU_ARRAY(hits, __u64, FW_MAX_RULES + 1);
NP_METRIC(hits, NP_EXPORT | NP_COUNTER);

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

/*
 * 1 when an inbound packet belongs to a connection of this host, by the kernel's own socket table
 * (of the interface's netns): TCP to a socket that is not listening (SYN sent, established, closing,
 * time-wait), UDP to a *connected* socket of this 4-tuple. Not TCP or UDP: 0.
 * Tests scalars (l3_proto, l4_proto), not header pointers: clang may merge tests of two pointers into
 * an OR of pointers, which the verifier refuses. A truncated L4 header has ports 0: no socket.
 */
static __always_inline int fw_local_connection(np_ctx_t *ctx, struct np_packet *pkt,
					       union fw_addr *src, union fw_addr *dst)
{
	struct bpf_sock_tuple t;
	struct bpf_sock *sk;
	__u32 size = sizeof(t.ipv4);
	int yes;

	__builtin_memset(&t, 0, sizeof(t));
	if (pkt->l3_proto == ETH_P_IP) {
		t.ipv4.saddr = src->w[3];
		t.ipv4.daddr = dst->w[3];
		t.ipv4.sport = bpf_htons(pkt->sport);
		t.ipv4.dport = bpf_htons(pkt->dport);
	} else {
		__builtin_memcpy(t.ipv6.saddr, src->w, 16);
		__builtin_memcpy(t.ipv6.daddr, dst->w, 16);
		t.ipv6.sport = bpf_htons(pkt->sport);
		t.ipv6.dport = bpf_htons(pkt->dport);
		size = sizeof(t.ipv6);
	}
	if (pkt->l4_proto == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return 0;
		yes = sk->state != BPF_TCP_LISTEN;
	} else if (pkt->l4_proto == IPPROTO_UDP) {
		sk = bpf_sk_lookup_udp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return 0;
		yes = sk->dst_port != 0;  /* connected: the lookup matched its remote port too */
	} else {
		return 0;
	}
	bpf_sk_release(sk);
	return yes;
}

static __always_inline int fw_match(struct fw_rule *r, union fw_addr *src, union fw_addr *dst,
				    struct np_packet *pkt, int established)
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
	if (r->established && (r->established == 1) != established)
		return 0;
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
	int established = 0;

	if (np_parse(ctx, &pkt) < 0 || fw_addrs(&pkt, &src, &dst) < 0)
		return NP_PASS;

	act = active.lookup(&zero);
	which = act ? (*act & 1) : 0;
	bank = banks.lookup(&which);
	if (!bank)
		return NP_PASS;
	/* at most one lookup per packet, before the loop (inside it, the verifier's states multiply per rule) */
	if (bank->established)
		established = fw_local_connection(ctx, &pkt, &src, &dst);

#pragma clang loop unroll(disable)
	for (i = 0; i < FW_MAX_RULES; i++) {
		__u32 index = which * FW_MAX_RULES + i;
		struct fw_rule *r;

		if (i >= bank->rules)
			break;
		r = rules.lookup(&index);
		if (!r)
			break;
		if (fw_match(r, &src, &dst, &pkt, established)) {
			fw_hit(i);
			return r->action ? NP_DROP : NP_PASS;
		}
	}
	fw_hit(FW_MAX_RULES);
	return bank->default_action ? NP_DROP : NP_PASS;
}
