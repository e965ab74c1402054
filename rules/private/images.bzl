"""Partition trees, filesystem images, disks and the published packages."""

load(":providers.bzl", "PartitionImageInfo", "RootfsTreeInfo")
load(":toolchains.bzl", "HOST_TOOLS_TOOLCHAIN", "ICOS_ATTRS", "host_tool", "output_name", "run_icos")

def _injections(ctx):
    """--inject arguments and inputs from the `inject` attribute: file -> "MODE:UID:GID:/path"."""
    args = []
    for target, spec in ctx.attr.inject.items():
        files = target.files.to_list()
        if len(files) != 1:
            fail("inject: {} must be exactly one file, it has {}".format(target.label, len(files)))
        args += ["--inject", "{}={}".format(spec, files[0].path)]
    return args, ctx.files.inject

_INJECT_ATTR = attr.label_keyed_string_dict(
    allow_files = True,
    doc = """Files to add: each file -> "MODE:UID:GID:/absolute/path", such as
"0755:0:0:/opt/icos/bin/icos". Missing parent directories become 0755 root directories.""",
)

def _tree_of(target):
    if RootfsTreeInfo in target:
        return target[RootfsTreeInfo].tar
    files = target.files.to_list()
    if len(files) != 1 or not files[0].path.endswith(".tar"):
        fail("{} must provide one canonical tar".format(target.label))
    return files[0]

def _file_tree_impl(ctx):
    tar = ctx.actions.declare_file(output_name(ctx.label.name, ".tar"))
    manifest = ctx.actions.declare_file(ctx.label.name.removesuffix(".tar") + ".manifest.jsonl")
    args, inputs = _injections(ctx)
    sources = []
    if ctx.attr.base:
        base = _tree_of(ctx.attr.base)
        sources = ["--input", base.path]
        inputs = inputs + [base]
    run_icos(
        ctx,
        arguments = ["rootfs", "canonicalize"] + sources + ["--output", tar.path, "--manifest", manifest.path] + args,
        inputs = inputs,
        outputs = [tar, manifest],
        mnemonic = "FileTree",
        progress_message = "Assembling the file tree %{label}",
    )
    return [DefaultInfo(files = depset([tar])), RootfsTreeInfo(tar = tar, manifest = manifest)]

file_tree = rule(
    implementation = _file_tree_impl,
    doc = "A canonical tree: `base` (or an empty root) plus Bazel-built files injected at given paths and modes.",
    attrs = dict({
        "base": attr.label(allow_single_file = [".tar"], doc = "The canonical tree to add to; an empty root when not given."),
        "inject": _INJECT_ATTR,
    }, **ICOS_ATTRS),
)

def _rootfs_split_impl(ctx):
    outputs = {}
    args = ["rootfs", "split", "--input", ctx.attr.src[RootfsTreeInfo].tar.path]
    for part in ["boot", "root", "var"]:
        tar = ctx.actions.declare_file("{}/{}.tar".format(ctx.label.name, part))
        manifest = ctx.actions.declare_file("{}/{}.manifest.jsonl".format(ctx.label.name, part))
        outputs[part] = RootfsTreeInfo(tar = tar, manifest = manifest)
        args += ["--" + part, tar.path, "--{}-manifest".format(part), manifest.path]
    run_icos(
        ctx,
        arguments = args,
        inputs = [ctx.attr.src[RootfsTreeInfo].tar],
        outputs = [f for info in outputs.values() for f in [info.tar, info.manifest]],
        mnemonic = "RootfsSplit",
        progress_message = "Splitting %{label} into boot, root and var trees",
    )
    return [
        DefaultInfo(files = depset([info.tar for info in outputs.values()])),
        OutputGroupInfo(**dict(
            {part: depset([info.tar]) for part, info in outputs.items()},
            **{part + "_manifest": depset([info.manifest]) for part, info in outputs.items()}
        )),
    ]

rootfs_split = rule(
    implementation = _rootfs_split_impl,
    doc = """Splits a root filesystem into its boot tree (/boot re-rooted), root tree and var tree
(/var re-rooted): output groups boot, root and var (tars) and boot_manifest, root_manifest and
var_manifest.""",
    attrs = dict({
        "src": attr.label(providers = [RootfsTreeInfo], mandatory = True, doc = "The root filesystem."),
    }, **ICOS_ATTRS),
)

def _partition_args(ctx):
    """The options that name the partition whose UUID the filesystem identifiers derive from."""
    args = ["--partitions", ctx.file.partitions.path, "--partition-name", ctx.attr.partition]
    if ctx.attr.seed:
        args += ["--seed", ctx.attr.seed]
    return args

def _ext4_image_impl(ctx):
    # Packaged: Bazel's disk and remote caches store files without holes, and a 3G filesystem
    # with a few hundred MB of files would cost them 3G.
    image = ctx.actions.declare_file(output_name(ctx.label.name, ".tzst"))
    tree = _tree_of(ctx.attr.src)
    mke2fs = host_tool(ctx, "mke2fs")
    run_icos(
        ctx,
        arguments = ["ext4", "--input", tree.path, "--package", image.path, "--size", ctx.attr.fs_size, "--label", ctx.attr.label or ctx.attr.partition, "--mke2fs", mke2fs.path] + _partition_args(ctx),
        inputs = [tree, ctx.file.partitions],
        outputs = [image],
        env = mke2fs.env,
        mnemonic = "Ext4Image",
        progress_message = "Making the ext4 filesystem %{label}",
    )
    return [DefaultInfo(files = depset([image])), PartitionImageInfo(image = image, partition = ctx.attr.partition, packaged = True)]

_IMAGE_ATTRS = dict({
    "src": attr.label(mandatory = True, allow_single_file = [".tar"], doc = "The canonical tree to put in the filesystem."),
    "fs_size": attr.string(mandatory = True, doc = "Filesystem size, such as 3G."),
    "partition": attr.string(mandatory = True, doc = "The partition it is for, in `partitions`: the filesystem identifiers derive from its UUID as systemd-repart derives them."),
    "partitions": attr.label(allow_single_file = [".csv"], mandatory = True, doc = "The partitions.csv that gives the partition's UUID (or lets it be derived from `seed`)."),
    "label": attr.string(doc = "Filesystem label; the partition name when empty."),
    "seed": attr.string(doc = "The build seed (a UUID) of the disk; needed when the partition's UUID is empty in `partitions`."),
}, **ICOS_ATTRS)

ext4_image = rule(
    implementation = _ext4_image_impl,
    doc = """An ext4 filesystem image of a canonical tree (mke2fs -d), its UUID and directory hash seed
derived from the partition's UUID as systemd-repart derives them, packaged as a partition .tzst
(member partition.img, sparse) named like the target.""",
    attrs = _IMAGE_ATTRS,
    toolchains = [HOST_TOOLS_TOOLCHAIN],
)

def _vfat_image_impl(ctx):
    image = ctx.actions.declare_file(output_name(ctx.label.name, ".img"))
    tree = _tree_of(ctx.attr.src)
    run_icos(
        ctx,
        arguments = ["fat", "--input", tree.path, "--output", image.path, "--size", ctx.attr.fs_size, "--label", (ctx.attr.label or ctx.attr.partition).upper()] + _partition_args(ctx),
        inputs = [tree, ctx.file.partitions],
        outputs = [image],
        mnemonic = "VfatImage",
        progress_message = "Making the FAT filesystem %{label}",
    )
    return [DefaultInfo(files = depset([image])), PartitionImageInfo(image = image, partition = ctx.attr.partition, packaged = False)]

vfat_image = rule(
    implementation = _vfat_image_impl,
    doc = """A FAT32 filesystem image of a tree of files and directories (the ESP, the GRUB partition), its
volume id derived from the partition's UUID as systemd-repart derives it.""",
    attrs = _IMAGE_ATTRS,
)

def _disk_image_impl(ctx):
    if ctx.attr.packaged:
        # The image only lives inside the action: Bazel never stores or hashes its holes.
        out = ctx.actions.declare_file(ctx.label.name)
        result = ["--package", out.path]
    else:
        out = ctx.actions.declare_file(output_name(ctx.label.name, ".img"))
        result = ["--output", out.path]
    args = ["disk", "--partitions", ctx.file.partitions.path, "--size", ctx.attr.disk_size, "--seed", ctx.attr.seed] + result
    inputs = [ctx.file.partitions]
    for target in ctx.attr.images:
        info = target[PartitionImageInfo]
        args += ["--image", "{}={}".format(info.partition, info.image.path)]
        inputs.append(info.image)
    run_icos(
        ctx,
        arguments = args,
        inputs = inputs,
        outputs = [out],
        mnemonic = "DiskImage",
        progress_message = "Writing the disk image %{output}",
    )
    return [DefaultInfo(files = depset([out]))]

disk_image = rule(
    implementation = _disk_image_impl,
    doc = "A sparse GPT disk image: partitions.csv plus the partition images, padded to `disk_size`; raw, or packaged as a .tar.zst.",
    attrs = dict({
        "partitions": attr.label(allow_single_file = [".csv"], mandatory = True, doc = "The partition table (IC-OS partitions.csv format)."),
        "images": attr.label_list(providers = [PartitionImageInfo], doc = "The partition images; each names its partition."),
        "disk_size": attr.string(mandatory = True, doc = "The disk size, such as 50G."),
        "seed": attr.string(mandatory = True, doc = "The build seed (a UUID): the disk GUID and unset partition UUIDs derive from it."),
        "packaged": attr.bool(doc = "Write disk-img.tar.zst (the image as the sparse member disk.img) named like the target, instead of the raw image."),
    }, **ICOS_ATTRS),
)

def _package_impl(ctx):
    archive = ctx.actions.declare_file(ctx.attr.out or ctx.label.name)
    args = ["package", "--output", archive.path]
    image_members = []
    for target, member in ctx.attr.members.items():
        files = target.files.to_list()
        if len(files) != 1:
            fail("members: {} must be exactly one file".format(target.label))
        if PartitionImageInfo in target and target[PartitionImageInfo].packaged:
            image_members.append(member)
            args += ["--image-member", "{}={}".format(member, files[0].path)]
        else:
            args += ["--member", "{}={}".format(member, files[0].path)]
    if image_members and list(ctx.attr.members.values())[:len(image_members)] != image_members:
        fail("members: packaged partition images ({}) must come before the other members".format(", ".join(image_members)))
    run_icos(
        ctx,
        arguments = args,
        inputs = ctx.files.members,
        outputs = [archive],
        mnemonic = "Package",
        progress_message = "Packaging %{output}",
    )
    return [DefaultInfo(files = depset([archive]))]

package = rule(
    implementation = _package_impl,
    doc = """A .tar.zst of images (sparse members) and small files: a partition's .tzst, disk-img.tar.zst,
update-img.tar.zst. Deterministic: fixed headers, a sparse map from content, zstd whose output does
not depend on the thread count.""",
    attrs = dict({
        "members": attr.label_keyed_string_dict(allow_files = True, mandatory = True, doc = "File -> member name, in this order. A packaged partition image (an ext4_image) becomes its raw image; these come first."),
        "out": attr.string(doc = "The output file name; the target name when empty."),
    }, **ICOS_ATTRS),
)

def _sha256sums_impl(ctx):
    sums = ctx.actions.declare_file(ctx.attr.out or ctx.label.name)
    run_icos(
        ctx,
        arguments = ["sha256sums", "write", "--output", sums.path] + [f.path for f in ctx.files.srcs],
        inputs = ctx.files.srcs,
        outputs = [sums],
        mnemonic = "Sha256Sums",
        progress_message = "Writing %{output}",
    )
    return [DefaultInfo(files = depset([sums]))]

sha256sums = rule(
    implementation = _sha256sums_impl,
    doc = "A SHA256SUMS file (sha256sum format, sorted by name) over the published files.",
    attrs = dict({
        "srcs": attr.label_list(allow_files = True, mandatory = True, doc = "The published files."),
        "out": attr.string(doc = "The output file name; the target name when empty."),
    }, **ICOS_ATTRS),
)

def upgrade_image(name, boot, root, var, version, **kwargs):
    """update-img.tar.zst: what an A/B upgrade installs into the inactive slot.

    Members: boot.img, root.img and var.img (the filesystems of the slot's boot, root and var
    partitions: the var of the new version starts from its own /var, as on a fresh install) and
    VERSION.TXT. The upgrade agent (icos-agent upgrade-install) writes them.

    Args:
        name: the output file name, such as update-img.tar.zst.
        boot: the boot filesystem image (an ext4_image, or a raw image file).
        root: the root filesystem image (likewise).
        var: the var filesystem image (likewise).
        version: the version.txt file.
        **kwargs: common attributes (tags, visibility).
    """
    package(name = name, members = {boot: "boot.img", root: "root.img", var: "var.img", version: "VERSION.TXT"}, **kwargs)
