/* top_talkers: bytes and packets per flow, counted by a socket filter on the
 * interfaces' packet sockets. User space reads and clears the table every interval.
 * A flow that does not fit the table (its size is set at load) is counted as lost. */

struct npg_flow_key {
    __u8 saddr[16];
    __u8 daddr[16];
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 family;
    __u8 egress;
    __u8 _pad;
    __u32 ifindex;
};

struct npg_flow_value {
    __u64 packets;
    __u64 bytes;
};

BPF_HASH(npg_flows, struct npg_flow_key, struct npg_flow_value, 1024);

int npg_top_talkers(struct __sk_buff *skb)
{
    struct npg_config *c = npg_config();
    struct npg_pkt p = {};
    struct npg_flow_key k = {};
    if (!c || npg_parse(skb, &p) < 0 || !p.family)
        return 0;
    k.ifindex = skb->ifindex;
    k.egress = skb->pkt_type == PACKET_OUTGOING_TYPE;
    k.family = p.family;
    k.proto = p.proto;
    k.sport = p.sport;
    k.dport = p.dport;
    __u64 *v = npg_values();
    if (!v)
        return 0;
    npg_set(v, NPG_F_IFINDEX, k.ifindex);
    npg_set(v, NPG_F_PROTO, k.proto);
    npg_set(v, NPG_F_SPORT, k.sport);
    npg_set(v, NPG_F_DPORT, k.dport);
    if (!npg_pass(c, v))
        return 0;
    __builtin_memcpy(k.saddr, p.saddr, 16);
    __builtin_memcpy(k.daddr, p.daddr, 16);
    struct npg_flow_value *counts = npg_flows.lookup(&k);
    if (counts) {
        __sync_fetch_and_add(&counts->packets, 1);
        __sync_fetch_and_add(&counts->bytes, skb->len);
        return 0;
    }
    struct npg_flow_value first = {1, skb->len};
    if (npg_flows.update(&k, &first) != 0)
        npg_count_lost();
    return 0;
}
