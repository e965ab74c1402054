"""Providers that image rules hand to each other."""

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

ContainerImageInfo = provider(
    doc = "A container image as an OCI archive, usable as the base of another container build.",
    fields = {"archive": "File: the OCI archive (podman save --format oci-archive)"},
)

PinnedInputsInfo = provider(
    doc = "The pinned images an artifact is built from, for its build record.",
    fields = {"base_images": "depset of string: <name>@sha256:<digest> of each pinned base image"},
)

RootfsTreeInfo = provider(
    doc = "A canonical root filesystem tar and its manifest.",
    fields = {
        "tar": "File: the canonical tar",
        "manifest": "File: its manifest, one JSON object per entry",
    },
)

PartitionImageInfo = provider(
    doc = "A partition image: a filesystem ready to be written at a partition's offset.",
    fields = {
        "image": "File: the raw image, or with `packaged` a .tzst holding it as its one member",
        "partition": "string: the partition name in partitions.csv",
        "packaged": "bool: `image` is a package (.tzst) of the raw image",
        "verity_root_hash": "File or None: for a verity root, the root hash of its dm-verity tree (hex)",
    },
)

AssemblyInfo = provider(
    doc = "How a package was assembled from images (disk_image, package): what assembly_test repeats by the old path.",
    fields = {
        "arguments": "list of string: the icos arguments without the output options, input paths relative to the runfiles root",
        "inputs": "depset of File: the files those arguments name",
        "package": "File: the package they assembled",
    },
)

OsLayoutInfo = provider(
    doc = "The resolved layout of an OS (`icos layout`): its partitions, volumes and boot slots as data.",
    fields = {
        "layout_json": "File: layout.json, every partition and volume with its size and identifiers, and the slots",
        "boot_args": "File: the slots' kernel command lines (BOOT_ARGS_A, BOOT_ARGS_B)",
        "grub_cfg": "File: the GRUB configuration with the slots' devices",
        "partitions": "File: the partitions.csv the disk is made from",
        "seed": "string: the build seed",
        "slots": "dict: slot name -> dict of role (boot, root, var) -> partition or volume name",
    },
)

PlacedFileInfo = provider(
    doc = "A file and where it goes in a file tree: path, mode and owner.",
    fields = {
        "file": "File: the content",
        "path": "string: the absolute path in the tree",
        "mode": "string: the permission bits, octal, such as 0644",
        "uid": "int: the owner's numeric user id",
        "gid": "int: the owner's numeric group id",
    },
)

PlacedFilesInfo = provider(
    doc = "Several files placed in a file tree, as file_tree takes them: a PlacedFileInfo each.",
    fields = {
        "files": "list of PlacedFileInfo",
    },
)

SevLaunchInfo = provider(
    doc = "What a host starts a variant with as an SEV-SNP guest by direct kernel boot, and its measurements.",
    fields = {
        "kernel": "File: vmlinuz, from the boot partition",
        "initrd": "File: initrd.img, from the boot partition",
        "cmdlines": "dict: slot -> File holding the slot's kernel command line (no newline)",
        "measurements": "File: launch-measurements.json",
        "firmware": "File: the AmdSev OVMF the measurements were computed with",
        "vcpus": "int: the vCPU count of the first measured configuration, which launchers start",
        "vcpu_type": "string: its QEMU vCPU model",
    },
)
