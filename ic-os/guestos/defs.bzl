"""GuestOS, the OS that runs the replica, as data: envs/<variant> build it with icos_build."""

load("//ic-os/components:defs.bzl", "GUEST_NODE_CONFIG_FILES", "RELEASE_KEYS", "UPGRADE_AGENT_FILES", "UPGRADE_CHANNEL_FILES", "VERITY_ROOT_CONTEXT", "VIRTUAL_MACHINE_CONTEXT")
load("//rules:defs.bzl", "ab_slots", "icos_os")

GUESTOS = icos_os(
    name = "guestos",
    package = "//ic-os/guestos",
    # IC-OS's GuestOS table: esp, grub, config, then A_boot, A_root, A_var and the B slot.
    partitions = "//ic-os/guestos:partitions.csv",
    slots = ab_slots(),
    # Every identifier beyond partitions.csv (the disk GUID) derives from this seed.
    seed = "3f0b8c2e-6d41-4a97-b5e8-1c9d2a7f4e60",
    # The root is verified (dm-verity) and read-only. panic=10: a kernel panic (a corrupted block
    # of the root among them) or a failure in the initramfs reboots 10 s later instead of halting or
    # opening a shell, so that a slot on trial that fails falls back (GRUB).
    verity_root = True,
    shared_contexts = VERITY_ROOT_CONTEXT | VIRTUAL_MACHINE_CONTEXT,
    kernel_args = "ro panic=10 console=ttyS0,115200",
    # The SEV-SNP launches measured for its -sev variants and prod: QEMU's EPYC-v4 model (the
    # vCPU signature in each VMSA), 2 vCPUs (launch-local-vm) and 1 (HostOS's GuestOS VM), each with
    # SNPActive alone (0x1) and with DebugSwap (0x21), which KVM on Linux 6.6+ hosts turns on.
    sev_configs = ["2:EPYC-v4:0x1", "1:EPYC-v4:0x1", "2:EPYC-v4:0x21", "1:EPYC-v4:0x21"],
    context_dir = "ic-os/guestos/rootfs",
    srcs = ["//ic-os/guestos:rootfs_srcs"],
    # Built from //ic-os/components/base-image:Dockerfile.base and context/packages.* by `icos base-image build`, pinned by
    # digest in context/docker-base.<variant> (MODULE.bazel, toolchains/base_images.bzl). Re-pin
    # with ci/base-images/rebuild.
    bases = {
        "dev": "@icos_base_images//:guestos-dev",
        "prod": "@icos_base_images//:guestos-prod",
    },
    replace = {
        "//ic-os/guestos:config/hostname": "/etc/hostname",
        "//ic-os/guestos:config/hosts": "/etc/hosts",
        "//ic-os/guestos:config/resolv.conf": "/etc/resolv.conf",
    },
    release_keys = RELEASE_KEYS,
    # The agent and its upgrade channel, and what applies the configuration disk HostOS attaches
    # to the VM.
    root_files = UPGRADE_AGENT_FILES + UPGRADE_CHANNEL_FILES + GUEST_NODE_CONFIG_FILES,
)
