"""An OS as data (icos_os), its shared targets (icos_os_targets) and every target of one of its
variants (icos_build), from its Dockerfile to SHA256SUMS."""

load("@bazel_skylib//rules:write_file.bzl", "write_file")
load(":container.bzl", "container_rootfs")
load(":images.bzl", "disk_image", "ext4_image", "file_tree", "package", "placed_file", "rootfs_split", "sha256sums", "upgrade_image", "vfat_image", "verity_boot_args")
load(":layout.bzl", "os_layout")
load(":record.bzl", "build_record")
load(":sev.bzl", "sev_launch_files")
load(":version.bzl", "version_txt")
load(":vm.bzl", "local_vm")

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

# The filesystems `icos rootfs split` makes of a root filesystem, and so the roles of a slot.
ROLES = ["boot", "root", "var"]

def ab_slots(roles = ROLES):
    """IC-OS's A/B slots: role R of slot S is the partition or volume named S_R (A_root, B_boot, ...).

    Args:
        roles: the roles each slot has.

    Returns:
        dict: slot name -> dict of role -> partition or volume name.
    """
    return {slot: {role: "{}_{}".format(slot, role) for role in roles} for slot in ["A", "B"]}

def build_context(srcs, executables = []):
    """Files that a directory adds to the build context of an OS (icos_os(shared_contexts)).

    Args:
        srcs: its files, a label (a filegroup).
        executables: the files of srcs that are executable (0755) in the context; every other file
            is 0644.

    Returns:
        struct: the context's files.
    """
    return struct(srcs = srcs, executables = executables)

def icos_os(
        name,
        package,
        partitions,
        slots,
        seed,
        srcs,
        bases,
        context_dir,
        executables = [],
        dockerfile = "//ic-os/components/rootfs:Dockerfile",
        shared_contexts = {},
        kernel_args = "",
        mounts = [],
        volumes = None,
        lvm_partition = None,
        vg_name = None,
        replace = {},
        root_files = [],
        release_keys = {},
        extra_images = {},
        esp_partition = "esp",
        grub_partition = "grub",
        disk_size = "50G",
        verity_root = False,
        sev_configs = []):
    """An OS described as data: what icos_os_targets and icos_build make its images from.

    Args:
        name: the OS's name, such as guestos.
        package: the package that calls icos_os_targets for it, such as //ic-os/guestos.
        partitions: its partition table (partitions.csv), a label.
        slots: slot name -> role -> partition or volume (ab_slots(), or one slot A).
        seed: the build seed (a UUID): every identifier the tables leave empty derives from it.
        srcs: the files of the build context.
        context_dir: the build context, the OS's rootfs/ directory (such as ic-os/guestos/rootfs).
        executables: the files of srcs that are executable (0755) in the build context; every other
            file is 0644, whatever its mode in the checkout (modes do not reach a remote worker).
        dockerfile: the rootfs Dockerfile, the one every OS shares unless given.
        shared_contexts: directory -> its files (build_context()): shared parts of the build
            context, merged after context_dir (such as the initramfs hook of every verity root).
        bases: base image variant (dev, prod) -> the pinned base image target.
        kernel_args: kernel arguments of every slot besides root and the mounts.
        mounts: partitions or volumes every slot mounts besides its own members, as
            TARGET:PATH:FSTYPE[:OPTIONS], such as `data:/mnt/data:ext4:ro`.
        volumes: the logical volumes (volumes.csv) of an LVM volume group, when it has one.
        lvm_partition: the partition that holds the volume group.
        vg_name: the volume group's name.
        replace: file label -> path it replaces in the rootfs (/etc/hostname, ...).
        root_files: placed_file targets added to every variant's root filesystem.
        release_keys: build type (dev, prod) -> the keys (a placed_files target) that the variants
            of that build type trust to sign their upgrades; every variant with an update image
            needs its build type's.
        extra_images: partition or volume name -> image that fills it in every variant's disk image
            (a variant's own extra_images win), such as an empty configuration filesystem.
        esp_partition: the EFI system partition.
        grub_partition: the GRUB partition (partition 2).
        disk_size: the size of the disk image.
        verity_root: the root filesystem of every variant is a verity root: its dm-verity hash tree
            follows it in its partition, the initramfs opens it with veritysetup (the OS's rootfs
            context holds the initramfs-tools hook and script, and its base image veritysetup), and
            the kernel mounts it read-only through dm-verity with the root hash on its command line.
            Writable state lives on var and the other partitions.
        sev_configs: the vCPU configurations its SEV-SNP launches are measured for,
            VCPUS:VCPU_TYPE:GUEST_FEATURES (such as 2:EPYC-v4:0x1); the first is the one launchers
            start. Variants with sev_guest or launch_measurements need them.

    Returns:
        struct: the OS.
    """
    for slot, members in slots.items():
        for role in members:
            if role not in ROLES:
                fail("icos_os {}: slot {} has role {}; the roles are {}".format(name, slot, role, ", ".join(ROLES)))
    if (volumes == None) != (lvm_partition == None) or (volumes == None) != (vg_name == None):
        fail("icos_os {}: volumes, lvm_partition and vg_name go together".format(name))
    return struct(
        name = name,
        package = package,
        partitions = partitions,
        slots = slots,
        seed = seed,
        dockerfile = dockerfile,
        shared_contexts = shared_contexts,
        context_dir = context_dir,
        srcs = srcs,
        executables = executables,
        bases = bases,
        kernel_args = kernel_args,
        mounts = mounts,
        volumes = volumes,
        lvm_partition = lvm_partition,
        vg_name = vg_name,
        replace = replace,
        root_files = root_files,
        release_keys = release_keys,
        extra_images = extra_images,
        esp_partition = esp_partition,
        grub_partition = grub_partition,
        disk_size = disk_size,
        verity_root = verity_root,
        sev_configs = sev_configs,
        layout = package + ":layout",
        esp = package + ":esp",
        grub = package + ":grub",
        layout_file = package + ":layout_file",
        os_name_file = package + ":os_name_file",
        boot_args_file = package + ":boot_args_file",
    )

def icos_os_targets(os, visibility = ["//visibility:public"]):
    """The targets every variant of `os` shares, in its package (`os.package`).

    Targets: layout (os_layout: layout.json, boot_args, grub.cfg), layout_file and boot_args_file
    (their places on the image), os_name_file (the OS's name at /opt/icos/share/os-name, which the
    upgrade agent refuses a release of another OS by), esp (the ESP with the shared GRUB EFI binary) and grub (the GRUB
    partition: the generated grub.cfg, the initial grubenv and its copy).

    Args:
        os: the OS (icos_os).
        visibility: visibility of the targets.
    """
    os_layout(
        name = "layout",
        partitions = os.partitions,
        volumes = os.volumes,
        lvm_partition = os.lvm_partition,
        vg_name = os.vg_name,
        slots = {slot: json.encode(members) for slot, members in os.slots.items()},
        seed = os.seed,
        grub_partition = os.grub_partition,
        kernel_args = os.kernel_args,
        mounts = os.mounts,
        verity_root = os.verity_root,
        grub_cfg_template = "//ic-os/bootloader:grub.cfg.in",
        visibility = visibility,
    )
    for output in ["layout.json", "boot_args", "grub.cfg"]:
        native.filegroup(name = "layout_" + output.replace(".", "_"), srcs = [":layout"], output_group = output.replace(".", "_"))
    placed_file(name = "layout_file", src = ":layout_layout_json", path = "/opt/icos/share/layout.json", visibility = visibility)
    placed_file(name = "boot_args_file", src = ":layout_boot_args", path = "/boot_args", visibility = visibility)
    write_file(name = "os_name", out = "os-name", content = [os.name])
    placed_file(name = "os_name_file", src = ":os_name", path = "/opt/icos/share/os-name", visibility = visibility)
    placed_file(name = "grub_cfg_file", src = ":layout_grub_cfg", path = "/grub.cfg")
    file_tree(name = "grub_tree", files = [":grub_cfg_file", "//ic-os/bootloader:grubenv_file", "//ic-os/bootloader:grubenv_copy_file"])
    vfat_image(name = "grub", src = ":grub_tree", layout = ":layout", target = os.grub_partition, label = "GRUB", visibility = visibility)
    vfat_image(name = "esp", src = "//ic-os/bootloader:esp_tree", layout = ":layout", target = os.esp_partition, label = "ESP", visibility = visibility)

def icos_build(
        name,
        os,
        base = None,
        build_args = {},
        rootfs = None,
        build_type = None,
        release_keys = None,
        root_files = [],
        extra_images = {},
        version = "//ic-os:version",
        subdir = "",
        launch_measurements = False,
        sev_guest = False,
        update_image = True,
        visibility = ["//visibility:public"]):
    """Creates the targets of one variant of `os` in the calling package.

    Targets (under `subdir/` when given, so that one package can hold several variants):
    version.txt, rootfs-tree.tar (canonical container rootfs, unless `rootfs` is given),
    partition-<role>.tzst for each role of slot A (the ext4 filesystems, packaged: the disk image and
    the upgrade image are made from these, so no cache stores a raw filesystem's holes),
    partition-grub.tzst, disk-img.tar.zst, update-img.tar.zst (unless update_image is False), SHA256SUMS, build-record.json (what
    built the image: commit, build root, base images, host tool versions), NAME (a filegroup of the
    published files) and launch-local-vm (`bazel run` boots disk-img.tar.zst in QEMU). Everything
    but NAME and launch-local-vm is `manual`; with `test --build_tests_only` (.bazelrc), `bazel test
    //...` builds images only where a test needs them.

    Args:
        name: the filegroup of the published files.
        os: the OS (icos_os).
        base: the base image variant (a key of os.bases), unless `rootfs` is given.
        build_args: Dockerfile build arguments.
        rootfs: instead of base and build_args: the canonical rootfs tree of another variant (its
            rootfs-tree.tar), for a variant that differs only in what the rules add, such as the
            version.
        build_type: dev or prod, which picks the release keys of `os` the variant trusts; by
            default build_args' BUILD_TYPE (a variant made from another's `rootfs` gives it).
        release_keys: instead of the release keys of `os` for the build type, these (a
            placed_files target), such as a test key for a test variant.
        root_files: placed_file targets this variant adds to its root filesystem (after the OS's).
        extra_images: partition or volume name -> image (a raw image, a partition .tzst or a
            disk-img.tar.zst) that fills it in the disk image, such as a GuestOS disk for HostOS's
            guestos volume in a test image.
        version: the version (a version_flag or derived_version) written to version.txt.
        subdir: a directory the targets' names start with.
        launch_measurements: publish the launch files and SEV-SNP measurements of this variant.
        sev_guest: a -sev variant: launch_measurements, and launch-local-vm starts slot A as an
            SEV-SNP guest by direct kernel boot (`-- --no-sev` without SEV).
        update_image: make and publish update-img.tar.zst; an OS that is never upgraded in place
            (SetupOS) publishes its disk image alone.
        visibility: visibility of the published targets.
    """
    prefix = subdir + "/" if subdir else ""
    manual = ["manual"]
    version_txt(name = prefix + "version.txt", version = version, tags = manual, visibility = visibility)
    if rootfs:
        if base or build_args:
            fail("icos_build: rootfs replaces base and build_args")
    else:
        if base not in os.bases:
            fail("icos_build {}: base must be one of {}".format(name, ", ".join(os.bases.keys())))
        rootfs = ":{}rootfs-tree.tar".format(prefix)
        container_rootfs(
            name = prefix + "rootfs-tree.tar",
            dockerfile = os.dockerfile,
            context_dir = os.context_dir,
            shared_context_dirs = sorted(os.shared_contexts.keys()),
            srcs = os.srcs + [os.shared_contexts[directory].srcs for directory in sorted(os.shared_contexts.keys())],
            executables = os.executables + [file for directory in sorted(os.shared_contexts.keys()) for file in os.shared_contexts[directory].executables],
            base = os.bases[base],
            build_args = build_args,
            replace = os.replace,
            tags = manual,
            visibility = visibility,
        )
    rootfs_split(name = prefix + "_trees", src = rootfs, tags = manual)
    for part in ROLES:
        native.filegroup(name = "{}_{}_split".format(prefix, part), srcs = [":{}_trees".format(prefix)], output_group = part, tags = manual)
    placed_file(name = prefix + "_version_boot", src = ":{}version.txt".format(prefix), path = "/version.txt", tags = manual)
    placed_file(name = prefix + "_version_root", src = ":{}version.txt".format(prefix), path = "/opt/icos/share/version.txt", tags = manual)
    boot_args_file = os.boot_args_file
    if os.verity_root:
        # The command lines carry this variant's root hash, known once its root filesystem is made.
        verity_boot_args(name = prefix + "_boot_args", layout = os.layout, root = ":{}partition-root.tzst".format(prefix), tags = manual)
        placed_file(name = prefix + "_boot_args_file", src = ":{}_boot_args".format(prefix), path = "/boot_args", tags = manual)
        boot_args_file = ":{}_boot_args_file".format(prefix)
    trusted_keys = ()
    if release_keys:
        trusted_keys = (release_keys,)
    elif update_image and os.release_keys:
        build_type = build_type or build_args.get("BUILD_TYPE")
        if build_type not in os.release_keys:
            fail("icos_build {}: build_type {} has no release keys in {} (it has {}); set build_type or build_args' BUILD_TYPE".format(
                name,
                build_type,
                os.name,
                ", ".join(sorted(os.release_keys.keys())),
            ))
        trusted_keys = (os.release_keys[build_type],)
    trees = {
        "boot": (":{}_version_boot".format(prefix), boot_args_file),
        "root": (":{}_version_root".format(prefix), os.layout_file, os.os_name_file) + tuple(os.root_files) + trusted_keys + tuple(root_files),
        "var": (),
    }
    slot_a = os.slots["A"]
    images = {}
    for role in ROLES:
        if role not in slot_a:
            continue
        tree = ":{}_{}_split".format(prefix, role)
        if trees[role]:
            file_tree(name = "{}_{}_tree".format(prefix, role), base = tree, files = list(trees[role]), tags = manual)
            tree = ":{}_{}_tree".format(prefix, role)
        images[role] = ":{}partition-{}.tzst".format(prefix, role)
        ext4_image(
            name = "{}partition-{}.tzst".format(prefix, role),
            src = tree,
            layout = os.layout,
            target = slot_a[role],
            label = role,
            verity_seed = os.seed if os.verity_root and role == "root" else "",
            tags = manual,
            # partition-var.tzst is not published: var is in the disk and the upgrade image.
            visibility = visibility if role != "var" else None,
        )
    package(
        name = prefix + "partition-grub.tzst",
        members = {os.grub: "partition.img"},
        tags = manual,
        visibility = visibility,
    )
    disk_image(
        name = prefix + "disk-img.tar.zst",
        partitions = os.partitions,
        images = [os.esp, os.grub] + [images[role] for role in ROLES if role in images],
        extra_images = {image: name for name, image in dict(os.extra_images, **extra_images).items()},
        disk_size = os.disk_size,
        seed = os.seed,
        volumes = os.volumes,
        lvm_partition = os.lvm_partition,
        vg_name = os.vg_name,
        packaged = True,
        tags = manual,
        visibility = visibility,
    )
    published = [":{}disk-img.tar.zst".format(prefix)]
    if update_image:
        upgrade_image(
            name = prefix + "update-img.tar.zst",
            images = images,
            version = ":{}version.txt".format(prefix),
            tags = manual,
            visibility = visibility,
        )
        published.append(":{}update-img.tar.zst".format(prefix))
    sev_launch = None
    if launch_measurements or sev_guest:
        if not os.sev_configs:
            fail("icos_build {}: {} has no sev_configs to measure".format(name, os.name))
        sev_launch = ":{}sev-launch".format(prefix)
        sev_launch_files(
            name = prefix + "sev-launch",
            boot_partition = images["boot"],
            slots = sorted(os.slots.keys()),
            configs = os.sev_configs,
            tags = manual,
            visibility = visibility,
        )
    sha256sums(name = prefix + "SHA256SUMS", srcs = published, tags = manual, visibility = visibility)
    build_record(
        name = prefix + "build-record.json",
        image = "{}/{}".format(os.name, name),
        rootfs = rootfs,
        tags = manual,
        visibility = visibility,
    )
    # Not manual: `bazel build //ic-os/<os>/envs/<variant>/...` builds the published files and the
    # launcher.
    local_vm(
        name = prefix + "launch-local-vm",
        disk_image = published[0],
        sev_launch = sev_launch if sev_guest else None,
        visibility = visibility,
    )
    native.filegroup(
        name = name,
        srcs = published + [":{}SHA256SUMS".format(prefix), ":{}build-record.json".format(prefix)] + ([sev_launch] if sev_launch else []),
        visibility = visibility,
    )
