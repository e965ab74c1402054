"""Providers that image rules hand to each other."""

ContainerImageInfo = provider(
    doc = "A container image as an OCI archive, usable as the base of another container build.",
    fields = {"archive": "File: the OCI archive (podman save --format oci-archive)"},
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
    },
)
