"""icos_build: every target of one OS variant, from its Dockerfile to SHA256SUMS."""

load(":container.bzl", "container_rootfs")
load(":images.bzl", "disk_image", "ext4_image", "file_tree", "package", "rootfs_split", "sha256sums", "upgrade_image")
load(":version.bzl", "version_txt")
load(":vm.bzl", "local_vm")

def icos_build(
        name,
        partitions,
        seed,
        boot_args,
        esp,
        grub,
        dockerfile = None,
        srcs = [],
        base = None,
        rootfs = None,
        build_args = {},
        replace = {},
        root_inject = {},
        version = "//ic-os:version",
        disk_size = "50G",
        boot_size = "1G",
        root_size = "3G",
        var_size = "1G",
        visibility = None):
    """Creates the targets of one OS variant in the calling package.

    Targets: version.txt, rootfs-tree.tar (canonical container rootfs, unless `rootfs` is given), partition-boot.tzst,
    partition-root.tzst, partition-var.tzst (the ext4 filesystems, packaged: the disk image and the upgrade
    image are made from these, so no cache stores a raw filesystem's holes), partition-grub.tzst,
    disk-img.tar.zst, update-img.tar.zst, SHA256SUMS, and
    NAME, a filegroup of the published files (disk-img.tar.zst, update-img.tar.zst, SHA256SUMS), and
    launch-local-vm (`bazel run` boots disk-img.tar.zst in QEMU).
    Everything but NAME is `manual`; with `test --build_tests_only` (.bazelrc), `bazel test //...`
    builds images only where a test needs them.

    Args:
        name: the filegroup of the published files.
        partitions: the partitions.csv; slot A is A_boot, A_root, A_var.
        seed: the build seed (a UUID): the disk GUID and the partition UUIDs partitions.csv leaves
            empty derive from it, and each filesystem's identifiers from its partition's UUID, as
            systemd-repart derives them.
        boot_args: the boot_args file (BOOT_ARGS_A, BOOT_ARGS_B) put on the boot partition.
        esp: the ESP image (a vfat_image for partition esp).
        grub: the GRUB partition image (a vfat_image for partition grub).
        dockerfile: the rootfs Dockerfile; its directory is the build context.
        srcs: the files of the build context.
        base: the base image (a container_image or debian_bootstrap target).
        rootfs: instead of dockerfile, srcs and base: the canonical rootfs tree of another build
            (its rootfs-tree.tar), for a variant that differs only in what the rules add, such as
            the version.
        build_args: Dockerfile build arguments.
        replace: file label -> path it replaces in the rootfs (/etc/hostname, ...).
        root_inject: file label -> "MODE:UID:GID:/path" added to the root filesystem.
        version: the version (a version_flag or derived_version) written to version.txt.
        disk_size: size of the disk image.
        boot_size: size of the boot filesystem.
        root_size: size of the root filesystem.
        var_size: size of the var filesystem.
        visibility: visibility of the published targets.
    """
    manual = ["manual"]
    version_txt(name = "version.txt", version = version, tags = manual, visibility = visibility)
    if rootfs:
        if dockerfile or srcs or base or build_args or replace:
            fail("icos_build: rootfs replaces dockerfile, srcs, base, build_args and replace")
    else:
        rootfs = ":rootfs-tree.tar"
        container_rootfs(
            name = "rootfs-tree.tar",
            dockerfile = dockerfile,
            srcs = srcs,
            base = base,
            build_args = build_args,
            replace = replace,
            tags = manual,
            visibility = visibility,
        )
    rootfs_split(name = "_trees", src = rootfs, tags = manual)
    for part in ["boot", "root", "var"]:
        native.filegroup(name = "_{}_split".format(part), srcs = [":_trees"], output_group = part, tags = manual)
    file_tree(
        name = "_boot_tree",
        base = ":_boot_split",
        inject = {
            ":version.txt": "0644:0:0:/version.txt",
            boot_args: "0644:0:0:/boot_args",
        },
        tags = manual,
    )
    file_tree(
        name = "_root_tree",
        base = ":_root_split",
        inject = dict({":version.txt": "0644:0:0:/opt/icos/share/version.txt"}, **root_inject),
        tags = manual,
    )
    images = {"boot": (":_boot_tree", boot_size), "root": (":_root_tree", root_size), "var": (":_var_split", var_size)}
    for part, (tree, size) in images.items():
        ext4_image(
            name = "partition-{}.tzst".format(part),
            src = tree,
            fs_size = size,
            label = part,
            partition = "A_" + part,
            partitions = partitions,
            seed = seed,
            tags = manual,
            # partition-var.tzst is not published: var is in the disk and the upgrade image.
            visibility = visibility if part != "var" else None,
        )
    package(
        name = "partition-grub.tzst",
        members = {grub: "partition.img"},
        tags = manual,
        visibility = visibility,
    )
    disk_image(
        name = "disk-img.tar.zst",
        partitions = partitions,
        images = [esp, grub, ":partition-boot.tzst", ":partition-root.tzst", ":partition-var.tzst"],
        disk_size = disk_size,
        seed = seed,
        packaged = True,
        tags = manual,
        visibility = visibility,
    )
    upgrade_image(
        name = "update-img.tar.zst",
        boot = ":partition-boot.tzst",
        root = ":partition-root.tzst",
        var = ":partition-var.tzst",
        version = ":version.txt",
        tags = manual,
        visibility = visibility,
    )
    sha256sums(name = "SHA256SUMS", srcs = [":disk-img.tar.zst", ":update-img.tar.zst"], tags = manual, visibility = visibility)
    # Not manual: `bazel build //ic-os/<os>/envs/<variant>/...` builds the published files and the
    # launcher.
    local_vm(name = "launch-local-vm", disk_image = ":disk-img.tar.zst", visibility = visibility)
    native.filegroup(
        name = name,
        srcs = [":disk-img.tar.zst", ":update-img.tar.zst", ":SHA256SUMS"],
        visibility = visibility,
    )
