/* trace_dns: DNS messages (UDP, port param[0], default 53) seen by a socket filter
 * on the interfaces' packet sockets. The DNS payload (up to NPG_DNS_MAX bytes) goes
 * to user space, which decodes names, types and rcodes and pairs answers with queries. */

#define NPG_DNS_MAX 512

struct npg_dns_event {
    __u64 ts_ns;
    __u32 ifindex;
    __u32 len;
    __u16 caplen;
    __u16 sport;
    __u16 dport;
    __u8 family;
    __u8 egress;
    __u8 saddr[16];
    __u8 daddr[16];
    __u8 data[NPG_DNS_MAX];
};

BPF_PERCPU_ARRAY(npg_scratch, struct npg_dns_event, 1);

int npg_trace_dns(struct __sk_buff *skb)
{
    struct npg_config *c = npg_config();
    struct npg_pkt p = {};
    int zero = 0;
    if (!c || npg_parse(skb, &p) < 0 || p.proto != NPG_IPPROTO_UDP)
        return 0;
    if (p.sport != c->param[0] && p.dport != c->param[0])
        return 0;
    struct npg_dns_event *e = npg_scratch.lookup(&zero);
    if (!e)
        return 0;
    e->ifindex = skb->ifindex;
    e->egress = skb->pkt_type == PACKET_OUTGOING_TYPE;
    e->family = p.family;
    e->sport = p.sport;
    e->dport = p.dport;
    __u64 *v = npg_values();
    if (!v)
        return 0;
    npg_set(v, NPG_F_IFINDEX, e->ifindex);
    npg_set(v, NPG_F_SPORT, e->sport);
    npg_set(v, NPG_F_DPORT, e->dport);
    if (!npg_pass(c, v))
        return 0;
    __builtin_memcpy(e->saddr, p.saddr, 16);
    __builtin_memcpy(e->daddr, p.daddr, 16);
    __u32 off = p.l4off + sizeof(struct udphdr);
    __u32 len = skb->len > off ? skb->len - off : 0;
    e->len = len;
    if (len > NPG_DNS_MAX)
        len = NPG_DNS_MAX;
    if (len < 12)
        return 0;  /* shorter than a DNS header */
    if (bpf_skb_load_bytes(skb, off, e->data, len) < 0)
        return 0;
    e->caplen = len;
    e->ts_ns = bpf_ktime_get_ns();
    npg_emit(e, offsetof(struct npg_dns_event, data) + len);
    return 0;
}
