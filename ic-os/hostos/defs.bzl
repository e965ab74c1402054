"""HostOS, the OS of the node that runs GuestOS as a virtual machine, as data: envs/<variant> build
it with icos_build."""

load("//ic-os/components:defs.bzl", "NODE_CONFIG_FILES", "RELEASE_KEYS", "UPGRADE_AGENT_FILES", "UPGRADE_CHANNEL_FILES")
load("//rules:defs.bzl", "ab_slots", "icos_os")

HOSTOS = icos_os(
    name = "hostos",
    package = "//ic-os/hostos",
    # The ESP, the GRUB partition, and hostlvm: one LVM physical volume whose volume group holds
    # the slots, config and guestos (volumes.csv).
    partitions = "//ic-os/hostos:partitions.csv",
    volumes = "//ic-os/hostos:volumes.csv",
    lvm_partition = "hostlvm",
    vg_name = "hostlvm",
    slots = ab_slots(),
    # Every identifier the tables leave empty derives from this seed.
    seed = "8d2e4f61-3a7b-4c95-a0d8-5e1f2b3c4d6e",
    # panic=10: a kernel panic reboots 10 s later, so that a slot on trial that panics falls back.
    kernel_args = "rw panic=10 console=ttyS0,115200",
    # The node's configuration, which SetupOS's installer writes into the config volume and
    # icos-config.service applies (NODE_CONFIG_FILES).
    mounts = ["config:/mnt/config:vfat:ro"],
    # Until an installer writes it, the config volume holds an empty CONFIG filesystem, so that
    # every HostOS image mounts it.
    extra_images = {"config": "//ic-os/hostos:empty_config_volume"},
    context_dir = "ic-os/hostos/rootfs",
    srcs = ["//ic-os/hostos:rootfs_srcs"],
    # Built from //ic-os/components/base-image:Dockerfile.base and context/packages.* by `icos
    # base-image build`, pinned by digest in context/docker-base.<variant>. Re-pin with
    # ci/base-images/rebuild.
    bases = {
        "dev": "@icos_base_images//:hostos-dev",
        "prod": "@icos_base_images//:hostos-prod",
    },
    replace = {
        "//ic-os/hostos:config/hostname": "/etc/hostname",
        "//ic-os/hostos:config/hosts": "/etc/hosts",
        "//ic-os/hostos:config/resolv.conf": "/etc/resolv.conf",
    },
    release_keys = RELEASE_KEYS,
    root_files = UPGRADE_AGENT_FILES + UPGRADE_CHANNEL_FILES + NODE_CONFIG_FILES + [
        "//ic-os/hostos/guestos-vm:icos_file",
        "//ic-os/hostos/guestos-vm:service_file",
        "//ic-os/hostos/guestos-vm:wants_file",
    ],
    disk_size = "70G",
)

# The settings of the GuestOS VM (guestos.service): a variant's `root_files`.
GUESTOS_VM_ENV = "//ic-os/hostos/guestos-vm:env_file"

# The SEV-SNP GuestOS VM: its settings and the launch files they name.
GUESTOS_VM_SEV_FILES = ["//ic-os/hostos/guestos-vm:sev_env_file"] + [
    "//ic-os/hostos/guestos-vm:guestos_sev_{}_file".format(group)
    for group in ["kernel", "initrd", "cmdline_A", "measurements", "firmware"]
]
