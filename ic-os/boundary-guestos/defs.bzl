"""Boundary-guestOS, the boundary node VM that serves the HTTP gateway, as data: envs/<variant>
build it with icos_build."""

load("//ic-os/components:defs.bzl", "RELEASE_KEYS", "UPGRADE_AGENT_FILES", "VERITY_ROOT_CONTEXT", "VIRTUAL_MACHINE_CONTEXT")
load("//rules:defs.bzl", "icos_os")

BOUNDARY_GUESTOS = icos_os(
    name = "boundary-guestos",
    package = "//ic-os/boundary-guestos",
    # ESP, GRUB, config, and one slot: A_boot, A_root, A_var.
    partitions = "//ic-os/boundary-guestos:partitions.csv",
    slots = {"A": {"boot": "A_boot", "root": "A_root", "var": "A_var"}},
    # Every identifier the table leaves empty derives from this seed.
    seed = "5c7e1a94-2b3d-4f68-9e0a-7d1c3b5f2e84",
    # As GuestOS: a verified, read-only root; the initramfs halts rather than open a shell.
    verity_root = True,
    shared_contexts = VERITY_ROOT_CONTEXT | VIRTUAL_MACHINE_CONTEXT,
    kernel_args = "ro panic=0 console=ttyS0,115200",
    # The SEV-SNP launches measured for its -sev variants: 2 vCPUs of QEMU's EPYC-v4 model
    # (launch-local-vm), SNPActive alone and with DebugSwap.
    sev_configs = ["2:EPYC-v4:0x1", "2:EPYC-v4:0x21"],
    context_dir = "ic-os/boundary-guestos/rootfs",
    srcs = ["//ic-os/boundary-guestos:rootfs_srcs"],
    # Built from //ic-os/components/base-image:Dockerfile.base and context/packages.* by `icos
    # base-image build`, pinned by digest in context/docker-base.<variant>. Re-pin with
    # ci/base-images/rebuild.
    bases = {
        "dev": "@icos_base_images//:boundary-guestos-dev",
        "prod": "@icos_base_images//:boundary-guestos-prod",
    },
    replace = {
        "//ic-os/boundary-guestos:config/hostname": "/etc/hostname",
        "//ic-os/boundary-guestos:config/hosts": "/etc/hosts",
        "//ic-os/boundary-guestos:config/resolv.conf": "/etc/resolv.conf",
    },
    release_keys = RELEASE_KEYS,
    # The agent reports the booted slot and version on the console (boot tests read it).
    root_files = UPGRADE_AGENT_FILES,
    disk_size = "8G",
)

# What nginx serves (/opt/icos/www): the page that installs the service worker, and the service
# worker itself, from the repository (dev, dev-sev) or from the pinned npm package (prod, prod-sev).
SERVICE_WORKER_DEV = [
    "//ic-os/boundary-guestos:index_html_file",
    "//ic-os/boundary-guestos:sw_js_dev_file",
]

SERVICE_WORKER_PROD = [
    "//ic-os/boundary-guestos:index_html_file",
    "//ic-os/boundary-guestos:sw_js_prod_file",
]
