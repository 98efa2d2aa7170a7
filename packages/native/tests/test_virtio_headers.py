"""The virtio definitions come from the uapi headers with the layouts the spec fixes."""

from keel.native._virtio import ffi, lib

# Sizes fixed by the virtio 1.x specification (2.7 Split Virtqueues, 5.1.4, 5.2.4).
SPEC_DESCRIPTOR_SIZE = 16
SPEC_USED_ELEMENT_SIZE = 8
SPEC_BLOCK_REQUEST_HEADER_SIZE = 16
SPEC_MMIO_MAGIC = int.from_bytes(b"virt", "little")


def test_ring_layouts_match_the_specification() -> None:
    assert ffi.sizeof("struct vring_desc") == SPEC_DESCRIPTOR_SIZE
    assert ffi.sizeof("struct vring_used_elem") == SPEC_USED_ELEMENT_SIZE
    assert ffi.sizeof("struct virtio_blk_outhdr") == SPEC_BLOCK_REQUEST_HEADER_SIZE
    assert ffi.offsetof("struct vring_desc", "next") == 14


def test_constants_are_the_headers() -> None:
    assert lib.VIRTIO_ID_NET != lib.VIRTIO_ID_BLOCK
    assert lib.VIRTIO_MMIO_CONFIG > lib.VIRTIO_MMIO_QUEUE_NOTIFY
    assert lib.VRING_DESC_F_NEXT and lib.VRING_DESC_F_WRITE and lib.VRING_DESC_F_INDIRECT
    assert lib.VIRTIO_CONFIG_S_NEEDS_RESET
    assert lib.VIRTIO_F_VERSION_1 == 32  # a 64-bit feature: above the first 32-bit word
    assert SPEC_MMIO_MAGIC == 0x74726976
