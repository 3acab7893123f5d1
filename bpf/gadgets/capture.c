/* capture: packets seen by a socket filter on the interfaces' packet sockets, cut to
 * a snap length (param[0]) and limited to a count (param[1]) in the kernel; user space
 * writes them as a pcap file. Only packets that pass the in-kernel filters count. */

#define NPG_SNAP_MAX 4096

struct npg_capture_event {
    __u64 ts_ns;
    __u32 ifindex;
    __u32 len;
    __u32 caplen;
    __u8 egress;
    __u8 family;
    __u8 proto;
    __u8 _pad;
    __u8 data[NPG_SNAP_MAX];
};

BPF_PERCPU_ARRAY(npg_scratch, struct npg_capture_event, 1);
BPF_ARRAY(npg_taken, u64, 1);

int npg_capture(struct __sk_buff *skb)
{
    struct npg_config *c = npg_config();
    struct npg_pkt p = {};
    int zero = 0;
    if (!c || npg_parse(skb, &p) < 0)
        return 0;
    __u64 *v = npg_values();
    if (!v)
        return 0;
    npg_set(v, NPG_F_IFINDEX, skb->ifindex);
    npg_set(v, NPG_F_PROTO, p.proto);
    npg_set(v, NPG_F_SPORT, p.sport);
    npg_set(v, NPG_F_DPORT, p.dport);
    npg_set(v, NPG_F_LEN, skb->len);
    if (!npg_pass(c, v))
        return 0;
    u64 *taken = npg_taken.lookup(&zero);
    if (!taken || __sync_fetch_and_add(taken, 1) >= c->param[1])
        return 0;
    struct npg_capture_event *e = npg_scratch.lookup(&zero);
    if (!e)
        return 0;
    /* 64-bit on purpose: a 32-bit length is zero-extended into a copy whose bounds the
     * verifier does not carry back to the register passed to the helper */
    __u64 len = skb->len;
    __u64 snap = c->param[0];
    if (len > snap)
        len = snap;
    if (len > NPG_SNAP_MAX)
        len = NPG_SNAP_MAX;
    if (len < 1)
        return 0;
    if (bpf_skb_load_bytes(skb, 0, e->data, len) < 0)
        return 0;
    e->ts_ns = bpf_ktime_get_ns();
    e->ifindex = skb->ifindex;
    e->len = skb->len;
    e->caplen = len;
    e->egress = skb->pkt_type == PACKET_OUTGOING_TYPE;
    e->family = p.family;
    e->proto = p.proto;
    npg_emit(e, offsetof(struct npg_capture_event, data) + len);
    return 0;
}
