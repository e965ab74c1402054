"""Partition trees, filesystem images, disks and the published packages."""

load(":providers.bzl", "AssemblyInfo", "OsLayoutInfo", "PartitionImageInfo", "PlacedFileInfo", "PlacedFilesInfo", "RootfsTreeInfo")
load(":toolchains.bzl", "HOST_TOOLS_TOOLCHAIN", "ICOS_ATTRS", "host_tool", "output_name", "run_icos")

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

def _check_mode(ctx):
    if len(ctx.attr.mode) != 4 or [c for c in ctx.attr.mode.elems() if c not in "01234567"]:
        fail("{}: mode {} must be four octal digits, such as 0644".format(ctx.label, ctx.attr.mode))

def _placed_file_impl(ctx):
    if not ctx.attr.path.startswith("/") or ctx.attr.path.endswith("/"):
        fail("{}: path {} must be an absolute file path".format(ctx.label, ctx.attr.path))
    _check_mode(ctx)
    return [
        DefaultInfo(files = depset([ctx.file.src])),
        PlacedFileInfo(file = ctx.file.src, path = ctx.attr.path, mode = ctx.attr.mode, uid = ctx.attr.uid, gid = ctx.attr.gid),
    ]

placed_file = rule(
    implementation = _placed_file_impl,
    doc = "A file placed in a file tree: where it goes, with which mode and owner (as pkg_files does).",
    attrs = {
        "src": attr.label(mandatory = True, allow_single_file = True, doc = "The file: a source file or a rule's single output."),
        "path": attr.string(mandatory = True, doc = "The absolute path in the tree, such as /opt/icos/bin/icos-agent."),
        "mode": attr.string(default = "0644", doc = "The permission bits as four octal digits."),
        "uid": attr.int(default = 0, doc = "The numeric owner."),
        "gid": attr.int(default = 0, doc = "The numeric group."),
    },
)

def _placed_files_impl(ctx):
    if not ctx.attr.dir.startswith("/") or ctx.attr.dir.endswith("/"):
        fail("{}: dir {} must be an absolute directory path without a trailing /".format(ctx.label, ctx.attr.dir))
    _check_mode(ctx)
    placed = {}
    for file in ctx.files.srcs:
        path = "{}/{}".format(ctx.attr.dir, file.basename)
        if path in placed:
            fail("{}: {} and {} would both be {}".format(ctx.label, placed[path].file.short_path, file.short_path, path))
        placed[path] = PlacedFileInfo(file = file, path = path, mode = ctx.attr.mode, uid = 0, gid = 0)
    return [
        DefaultInfo(files = depset(ctx.files.srcs)),
        PlacedFilesInfo(files = [placed[path] for path in sorted(placed.keys())]),
    ]

placed_files = rule(
    implementation = _placed_files_impl,
    doc = "Files placed in one directory of a file tree under their own names, owned by root; none is fine.",
    attrs = {
        "srcs": attr.label_list(allow_files = True, doc = "The files (or filegroups of them); their base names must differ."),
        "dir": attr.string(mandatory = True, doc = "The absolute directory they go in, such as /etc/icos/release-keys."),
        "mode": attr.string(default = "0644", doc = "The permission bits of each, four octal digits."),
    },
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
    args = ["rootfs", "canonicalize", "--output", tar.path, "--manifest", manifest.path]
    inputs = []
    if ctx.attr.base:
        base = _tree_of(ctx.attr.base)
        args += ["--input", base.path]
        inputs.append(base)
    for target in ctx.attr.files:
        for placed in target[PlacedFilesInfo].files if PlacedFilesInfo in target else [target[PlacedFileInfo]]:
            args += ["--inject", "{}:{}:{}:{}={}".format(placed.mode, placed.uid, placed.gid, placed.path, placed.file.path)]
            inputs.append(placed.file)
    run_icos(
        ctx,
        arguments = args,
        inputs = inputs,
        outputs = [tar, manifest],
        mnemonic = "FileTree",
        progress_message = "Assembling the file tree %{label}",
    )
    return [DefaultInfo(files = depset([tar])), RootfsTreeInfo(tar = tar, manifest = manifest)]

file_tree = rule(
    implementation = _file_tree_impl,
    doc = "A canonical tree: `base` (or an empty root) plus placed files. Missing parent directories become 0755 root directories.",
    attrs = dict({
        "base": attr.label(allow_single_file = [".tar"], doc = "The canonical tree to add to; an empty root when not given."),
        "files": attr.label_list(providers = [[PlacedFileInfo], [PlacedFilesInfo]], doc = "The files to add (placed_file and placed_files targets)."),
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

def _layout_args(ctx):
    """The arguments that size and identify a filesystem from its OS layout."""
    args = ["--layout", ctx.attr.layout[OsLayoutInfo].layout_json.path, "--target", ctx.attr.target]
    if ctx.attr.fs_size:
        args += ["--size", ctx.attr.fs_size]
    return args

def _ext4_image_impl(ctx):
    # Packaged: Bazel's disk and remote caches store files without holes, and a 10G filesystem
    # with a few hundred MB of files would cost them 10G.
    image = ctx.actions.declare_file(output_name(ctx.label.name, ".tzst"))
    tree = _tree_of(ctx.attr.src)
    mke2fs = host_tool(ctx, "mke2fs")
    args = ["ext4", "--input", tree.path, "--package", image.path, "--label", ctx.attr.label or ctx.attr.target, "--mke2fs", mke2fs.path] + _layout_args(ctx)
    outputs = [image]
    root_hash = None
    if ctx.attr.verity_seed:
        root_hash = ctx.actions.declare_file(ctx.label.name.removesuffix(".tzst") + ".roothash")
        args += ["--verity-seed", ctx.attr.verity_seed, "--verity-root-hash", root_hash.path]
        outputs.append(root_hash)
    run_icos(
        ctx,
        arguments = args,
        inputs = [tree, ctx.attr.layout[OsLayoutInfo].layout_json],
        outputs = outputs,
        env = mke2fs.env,
        mnemonic = "Ext4Image",
        progress_message = "Making the ext4 filesystem %{label}",
    )
    return [
        DefaultInfo(files = depset([image])),
        PartitionImageInfo(image = image, partition = ctx.attr.target, packaged = True, verity_root_hash = root_hash),
        OutputGroupInfo(root_hash = depset([root_hash] if root_hash else [])),
    ]

_IMAGE_ATTRS = dict({
    "src": attr.label(mandatory = True, allow_single_file = [".tar"], doc = "The canonical tree to put in the filesystem."),
    "layout": attr.label(mandatory = True, providers = [OsLayoutInfo], doc = "The OS's layout (os_layout)."),
    "target": attr.string(mandatory = True, doc = """The partition or volume of `layout` the filesystem is for: its size, and the UUID the
filesystem identifiers derive from (as systemd-repart derives them)."""),
    "fs_size": attr.string(doc = "The filesystem size, such as 3G, when smaller than its partition or volume."),
    "label": attr.string(doc = "Filesystem label; the target's name when empty."),
}, **ICOS_ATTRS)

ext4_image = rule(
    implementation = _ext4_image_impl,
    doc = """An ext4 filesystem image of a canonical tree (mke2fs -d) that fills its partition or volume, its
UUID and directory hash seed derived from the target's UUID, packaged as a partition .tzst (member
partition.img, sparse) named like the target. With `verity_seed`, a verity root: the filesystem
leaves room for its dm-verity superblock and hash tree, which follow it in the image, and NAME.roothash
(output group root_hash) holds the root hash.""",
    attrs = dict(_IMAGE_ATTRS, **{
        "verity_seed": attr.string(doc = "Make a verity root whose salt and UUID derive from this build seed."),
    }),
    toolchains = [HOST_TOOLS_TOOLCHAIN],
)

def _verity_boot_args_impl(ctx):
    output = ctx.actions.declare_file(ctx.label.name)
    root_hash = ctx.attr.root[PartitionImageInfo].verity_root_hash
    if not root_hash:
        fail("{}: {} is not a verity root (ext4_image with verity_seed)".format(ctx.label, ctx.attr.root.label))
    template = ctx.attr.layout[OsLayoutInfo].boot_args
    run_icos(
        ctx,
        arguments = ["verity", "boot-args", "--template", template.path, "--root-hash-file", root_hash.path, "--output", output.path],
        inputs = [template, root_hash],
        outputs = [output],
        mnemonic = "VerityBootArgs",
        progress_message = "Putting the root hash into the kernel command lines %{label}",
    )
    return [DefaultInfo(files = depset([output]))]

verity_boot_args = rule(
    implementation = _verity_boot_args_impl,
    doc = """The kernel command lines of an OS variant with a verity root: the layout's boot_args (made with
`verity_root`) with the root hash of the variant's root filesystem filled in.""",
    attrs = dict({
        "layout": attr.label(mandatory = True, providers = [OsLayoutInfo], doc = "The OS's layout (os_layout with verity_root)."),
        "root": attr.label(mandatory = True, providers = [PartitionImageInfo], doc = "The verity root (ext4_image with verity_seed)."),
    }, **ICOS_ATTRS),
)

def _vfat_image_impl(ctx):
    image = ctx.actions.declare_file(output_name(ctx.label.name, ".img"))
    tree = _tree_of(ctx.attr.src)
    run_icos(
        ctx,
        arguments = ["fat", "--input", tree.path, "--output", image.path, "--label", (ctx.attr.label or ctx.attr.target).upper()] + _layout_args(ctx),
        inputs = [tree, ctx.attr.layout[OsLayoutInfo].layout_json],
        outputs = [image],
        mnemonic = "VfatImage",
        progress_message = "Making the FAT filesystem %{label}",
    )
    return [DefaultInfo(files = depset([image])), PartitionImageInfo(image = image, partition = ctx.attr.target, packaged = False, verity_root_hash = None)]

vfat_image = rule(
    implementation = _vfat_image_impl,
    doc = """A FAT32 filesystem image of a tree of files and directories (the ESP, the GRUB partition) that
fills its partition, its volume id derived from the partition's UUID as systemd-repart derives it.""",
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

    # (flag, value, file whose path the value holds as {}) for the action and for assembly_test.
    options = [("--partitions", "{}", ctx.file.partitions), ("--size", ctx.attr.disk_size, None), ("--seed", ctx.attr.seed, None)]
    if ctx.file.volumes:
        options += [("--volumes", "{}", ctx.file.volumes), ("--lvm-partition", ctx.attr.lvm_partition, None), ("--vg-name", ctx.attr.vg_name, None)]
    for target in ctx.attr.images:
        info = target[PartitionImageInfo]
        options.append(("--image", info.partition + "={}", info.image))
    for target, name in ctx.attr.extra_images.items():
        image = target.files.to_list()
        if len(image) != 1:
            fail("extra_images: {} must be exactly one file".format(target.label))
        options.append(("--image", name + "={}", image[0]))
    inputs = [file for _, _, file in options if file]
    run_icos(
        ctx,
        arguments = ["disk"] + _expand(options, lambda file: file.path) + result,
        inputs = inputs,
        outputs = [out],
        mnemonic = "DiskImage",
        progress_message = "Writing the disk image %{output}",
    )
    providers = [DefaultInfo(files = depset([out]))]
    if ctx.attr.packaged:
        providers.append(AssemblyInfo(arguments = ["disk"] + _expand(options, _runfiles_path), inputs = depset(inputs), package = out))
    return providers

def _expand(options, path):
    """The arguments of (flag, value, file) options, `{}` in a value replaced by path(file)."""
    return [part for flag, value, file in options for part in [flag, value.format(path(file)) if file else value]]

def _runfiles_path(file):
    """The path of `file` relative to a test's runfiles directory of the main repository."""
    return file.short_path

disk_image = rule(
    implementation = _disk_image_impl,
    doc = """A sparse GPT disk image: partitions.csv plus the partition images, padded to `disk_size`, and
optionally an LVM volume group filling one partition with images for its volumes; raw, or packaged
as a .tar.zst.""",
    attrs = dict({
        "partitions": attr.label(allow_single_file = [".csv"], mandatory = True, doc = "The partition table (IC-OS partitions.csv format)."),
        "images": attr.label_list(providers = [PartitionImageInfo], doc = "The partition and volume images; each names its partition or logical volume."),
        "extra_images": attr.label_keyed_string_dict(allow_files = True, doc = """More images: file -> the partition or volume it fills (a raw image, a partition .tzst, or a
package holding one image such as a disk-img.tar.zst)."""),
        "volumes": attr.label(allow_single_file = [".csv"], doc = "The logical volumes (volumes.csv) of an LVM volume group that fills `lvm_partition`."),
        "lvm_partition": attr.string(doc = "The partition that holds the volume group (with `volumes`)."),
        "vg_name": attr.string(doc = "The volume group's name (with `volumes`)."),
        "disk_size": attr.string(mandatory = True, doc = "The disk size, such as 50G."),
        "seed": attr.string(mandatory = True, doc = "The build seed (a UUID): the disk GUID and unset partition UUIDs derive from it."),
        "packaged": attr.bool(doc = "Write disk-img.tar.zst (the image as the sparse member disk.img) named like the target, instead of the raw image."),
    }, **ICOS_ATTRS),
)

def _package_impl(ctx):
    archive = ctx.actions.declare_file(ctx.attr.out or ctx.label.name)
    options = []
    image_members = []
    for target, member in ctx.attr.members.items():
        files = target.files.to_list()
        if len(files) != 1:
            fail("members: {} must be exactly one file".format(target.label))
        if PartitionImageInfo in target and target[PartitionImageInfo].packaged:
            image_members.append(member)
            options.append(("--image-member", member + "={}", files[0]))
        else:
            options.append(("--member", member + "={}", files[0]))
    if image_members and list(ctx.attr.members.values())[:len(image_members)] != image_members:
        fail("members: packaged partition images ({}) must come before the other members".format(", ".join(image_members)))
    run_icos(
        ctx,
        arguments = ["package", "--output", archive.path] + _expand(options, lambda file: file.path),
        inputs = ctx.files.members,
        outputs = [archive],
        mnemonic = "Package",
        progress_message = "Packaging %{output}",
    )
    return [
        DefaultInfo(files = depset([archive])),
        AssemblyInfo(arguments = ["package"] + _expand(options, _runfiles_path), inputs = depset(ctx.files.members), package = archive),
    ]

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

def upgrade_image(name, images, version, **kwargs):
    """update-img.tar.zst: what an A/B upgrade installs into the inactive slot.

    Members: <role>.img for each role of the slot (boot.img, root.img and var.img: the filesystems
    of the slot's boot, root and var; the var of the new version starts from its own /var, as on a
    fresh install) and VERSION.TXT. The upgrade agent (icos-agent upgrade-install) writes each image
    into the inactive slot's partition or volume of that role, as the installed layout.json says.

    Args:
        name: the output file name, such as update-img.tar.zst.
        images: role -> the filesystem image (an ext4_image, or a raw image file).
        version: the version.txt file.
        **kwargs: common attributes (tags, visibility).
    """
    members = {image: "{}.img".format(role) for role, image in images.items()}
    members[version] = "VERSION.TXT"
    package(name = name, members = members, **kwargs)

def _assembly_test_impl(ctx):
    info = ctx.attr.package[AssemblyInfo]
    script = ctx.actions.declare_file(ctx.label.name + ".sh")
    command = ["bash", ctx.file._script.short_path, ctx.executable._icos.short_path, info.package.short_path] + info.arguments
    ctx.actions.write(script, "#!/bin/sh\nexec {}\n".format(" ".join([_shell_quote(word) for word in command])), is_executable = True)
    runfiles = ctx.runfiles(files = [info.package, ctx.file._script], transitive_files = info.inputs)
    runfiles = runfiles.merge(ctx.attr._icos[DefaultInfo].default_runfiles)
    return [DefaultInfo(executable = script, runfiles = runfiles)]

def _shell_quote(word):
    return "'" + word.replace("'", "'\\''") + "'"

assembly_test = rule(
    implementation = _assembly_test_impl,
    test = True,
    doc = """Checks a package that icos assembled from other packages (a disk_image with `packaged`, an
update image) against the old path, which its test keeps as the reference: the raw disk (icos disk
--output), or each packaged image extracted by GNU tar, packaged afresh by icos package. The two
must decompress with stock zstd to the same tar stream, and GNU tar must extract the same files
from both.""",
    attrs = dict({
        "package": attr.label(mandatory = True, providers = [AssemblyInfo], doc = "The disk_image or package target to check."),
        "_script": attr.label(default = "//rules/private:assembly_test.sh", allow_single_file = True),
    }, **ICOS_ATTRS),
)
