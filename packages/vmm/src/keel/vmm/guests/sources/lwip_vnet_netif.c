/* The lwIP netif for keel's guest virtio-net driver. Frames are copied both ways: a pbuf
   chain is flattened into one frame for vnet_send, and a received frame is copied into a
   pool pbuf (vnet_receive has already copied it out of the ring). */
#include "lwip_vnet_netif.h"

#include "lwip/etharp.h"
#include "lwip/pbuf.h"
#include "netif/ethernet.h"

#define ETHERNET_MTU 1500
#define ETHERNET_FRAME_LIMIT (ETHERNET_MTU + SIZEOF_ETH_HDR)

static u8 transmit_frame[VNET_FRAME_LIMIT];
static u8 receive_frame[VNET_FRAME_LIMIT];

static err_t vnet_link_output(struct netif *netif, struct pbuf *chain) {
    struct vnet *net = netif->state;
    if (chain->tot_len > sizeof transmit_frame) return ERR_BUF;
    u16_t length = pbuf_copy_partial(chain, transmit_frame, chain->tot_len, 0);
    if (length != chain->tot_len) return ERR_BUF;
    return vnet_send(net, transmit_frame, length) == 0 ? ERR_OK : ERR_IF;
}

err_t vnet_netif_init(struct netif *netif) {
    struct vnet *net = netif->state;
    netif->name[0] = 'e';
    netif->name[1] = 'n';
    netif->mtu = ETHERNET_MTU;
    netif->hwaddr_len = ETH_HWADDR_LEN;
    vnet_mac(net, netif->hwaddr);
    netif->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET;
    netif->output = etharp_output;
    netif->linkoutput = vnet_link_output;
    return ERR_OK;
}

int vnet_netif_poll(struct netif *netif, int limit) {
    struct vnet *net = netif->state;
    int handed = 0;
    for (int attempt = 0; attempt < limit; attempt++) {   /* every frame counts, even dropped */
        int length = vnet_receive(net, receive_frame, sizeof receive_frame);
        if (length == VIRTIO_ERROR_TOO_LARGE) continue;   /* dropped by the driver */
        if (length < 0) return length;
        if (length == 0) break;
        if (length > ETHERNET_FRAME_LIMIT) continue;     /* larger than our MTU: drop */
        struct pbuf *frame = pbuf_alloc(PBUF_RAW, (u16_t)length, PBUF_POOL);
        if (frame == NULL) break;                         /* out of pool: TCP retransmits */
        pbuf_take(frame, receive_frame, (u16_t)length);
        if (netif->input(frame, netif) != ERR_OK) pbuf_free(frame);
        handed++;
    }
    vnet_transmit_pending(net);
    return handed;
}
