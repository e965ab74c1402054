"""GuestOS: the OS that runs the replica. One guestos_build call per variant (envs/*)."""

load("//ic-os/components:defs.bzl", "UPGRADE_AGENT_INJECT")
load("//rules:defs.bzl", "icos_build")

# The seed of the GuestOS disk GUID (and of any partition UUID partitions.csv leaves empty); the
# filesystem identifiers derive from the partition UUIDs, as systemd-repart derives them.
GUESTOS_SEED = "3f0b8c2e-6d41-4a97-b5e8-1c9d2a7f4e60"

def guestos_build(name, build_args = None, rootfs = None, version = "//ic-os:version"):
    """The targets of one GuestOS variant (see icos_build) in the calling package.

    Args:
        name: the filegroup of the published files.
        build_args: the variant's Dockerfile build arguments (BUILD_TYPE, ROOT_PASSWORD, ...).
        rootfs: instead of build_args, the rootfs-tree.tar of another variant to reuse (a variant
            that differs only in its version).
        version: the version written to version.txt.
    """
    container = {} if rootfs else {
        "dockerfile": "//ic-os/guestos:rootfs/Dockerfile",
        "srcs": ["//ic-os/guestos:rootfs_srcs"],
        "base": "//ic-os/guestos:base-" + ("prod" if (build_args or {}).get("BUILD_TYPE") == "prod" else "dev"),
        "build_args": build_args,
        "replace": {
            "//ic-os/guestos:config/hostname": "/etc/hostname",
            "//ic-os/guestos:config/hosts": "/etc/hosts",
            "//ic-os/guestos:config/resolv.conf": "/etc/resolv.conf",
        },
    }
    icos_build(
        name = name,
        rootfs = rootfs,
        version = version,
        root_inject = UPGRADE_AGENT_INJECT,
        partitions = "//ic-os/guestos:partitions.csv",
        seed = GUESTOS_SEED,
        boot_args = "//ic-os/guestos:boot_args",
        esp = "//ic-os/bootloader:esp",
        grub = "//ic-os/bootloader:grub",
        visibility = ["//visibility:public"],
        **container
    )
