/* An lwIP network interface over keel's guest virtio-net driver (vnet_send / vnet_receive). */
#ifndef KEEL_LWIP_VNET_NETIF_H
#define KEEL_LWIP_VNET_NETIF_H

#include "lwip/netif.h"
#include "virtio_guest.h"

/* netif_add() init function: `netif->state` is the opened struct vnet. */
err_t vnet_netif_init(struct netif *netif);
/* Hand up to `limit` waiting frames to lwIP; returns how many, or <0 if the device failed. */
int vnet_netif_poll(struct netif *netif, int limit);

#endif
