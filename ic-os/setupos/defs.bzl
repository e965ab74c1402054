"""SetupOS, the installer image that puts HostOS and GuestOS on a blank machine, as data:
envs/<variant> build it with setupos_build."""

load("@bazel_skylib//rules:copy_file.bzl", "copy_file")
load("//ic-os/components:defs.bzl", "UPGRADE_AGENT_FILES")
load("//rules:defs.bzl", "ext4_image", "file_tree", "icos_build", "icos_os", "placed_file", "sha256sums", "vfat_image")

SETUPOS = icos_os(
    name = "setupos",
    package = "//ic-os/setupos",
    # ESP, GRUB, config, data, and one slot: boot and root (no var: nothing outlives an install).
    partitions = "//ic-os/setupos:partitions.csv",
    slots = {"A": {"boot": "boot", "root": "root"}},
    # Every identifier the table leaves empty derives from this seed.
    seed = "0f3b6d2a-9c41-4e87-b5a0-6e2d8c1f7a35",
    kernel_args = "rw console=ttyS0,115200",
    # The installer (icos-install.service) reads both, read-only.
    mounts = [
        "config:/mnt/config:vfat:ro",
        "data:/mnt/data:ext4:ro",
    ],
    context_dir = "ic-os/setupos/rootfs",
    srcs = ["//ic-os/setupos:rootfs_srcs"],
    # Built from //ic-os/components/base-image:Dockerfile.base and context/packages.* by `icos
    # base-image build`, pinned by digest in context/docker-base.<variant>. Re-pin with
    # ci/base-images/rebuild.
    bases = {
        "dev": "@icos_base_images//:setupos-dev",
        "prod": "@icos_base_images//:setupos-prod",
    },
    root_files = UPGRADE_AGENT_FILES + [
        "//ic-os/setupos/installer:icos_install_file",
        "//ic-os/setupos/installer:service_file",
        "//ic-os/setupos/installer:wants_file",
    ],
    disk_size = "6G",
)

# The config partition of every variant: the repository's example configuration, which a user
# replaces on the stick before installing.
SETUPOS_CONFIG = [
    "//ic-os/setupos:config_ini_file",
    "//ic-os/setupos:admin_keys_file",
]

def setupos_build(name, hostos, guestos, requirements, base = None, build_args = {}, rootfs = None, config = SETUPOS_CONFIG):
    """One SetupOS variant: its data partition holds the disk images of `hostos` and `guestos`.

    Targets: those of icos_build (without an upgrade image) and, under data/, the files of the data
    partition (host-os.img.tar.zst, guest-os.img.tar.zst, host-os.layout.json and their SHA256SUMS).

    Args:
        name: the filegroup of the published files.
        base: the base image variant (dev, prod), unless `rootfs` is given.
        build_args: Dockerfile build arguments.
        rootfs: instead of base and build_args: another variant's rootfs-tree.tar.
        hostos: the HostOS variant package, such as //ic-os/hostos/envs/dev.
        guestos: the GuestOS variant package, such as //ic-os/guestos/envs/dev.
        requirements: the placed_file of /etc/icos/setupos.env, the machine's minimums.
        config: placed_file targets of the config partition (config.ini, ssh_authorized_keys/).
    """
    data_files = {
        "host-os.img.tar.zst": hostos + ":disk-img.tar.zst",
        "guest-os.img.tar.zst": guestos + ":disk-img.tar.zst",
        "host-os.layout.json": "//ic-os/hostos:layout_layout_json",
    }
    manual = ["manual"]
    for file, src in data_files.items():
        # Named as the installer reads them; a link, not a copy of the image.
        copy_file(name = "_data_" + file, src = src, out = "data/" + file, allow_symlink = True, tags = manual)
    sha256sums(name = "_data_SHA256SUMS", srcs = [":data/" + file for file in data_files], out = "data/SHA256SUMS", tags = manual)
    for file in list(data_files) + ["SHA256SUMS"]:
        placed_file(name = "_data_file_" + file, src = ":_data_" + file, path = "/" + file, tags = manual)
    file_tree(name = "_data_tree", files = [":_data_file_" + file for file in list(data_files) + ["SHA256SUMS"]], tags = manual)
    ext4_image(name = "partition-data.tzst", src = ":_data_tree", layout = SETUPOS.layout, target = "data", tags = manual)
    file_tree(name = "_config_tree", files = config, tags = manual)
    vfat_image(name = "partition-config.img", src = ":_config_tree", layout = SETUPOS.layout, target = "config", label = "CONFIG", tags = manual)
    icos_build(
        name = name,
        os = SETUPOS,
        base = base,
        build_args = build_args,
        rootfs = rootfs,
        root_files = [requirements],
        extra_images = {
            "config": ":partition-config.img",
            "data": ":partition-data.tzst",
        },
        update_image = False,
    )
