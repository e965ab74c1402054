"""Container builds: pinned base images and the root filesystems of Dockerfiles built on them."""

load(":providers.bzl", "ContainerImageInfo", "PinnedInputsInfo", "RootfsTreeInfo")
load(":toolchains.bzl", "HOST_TOOLS_TOOLCHAIN", "ICOS_ATTRS", "host_tool", "output_name", "run_icos")

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

def _pinned_image_impl(ctx):
    # The archive comes from the OCI store through a repository (toolchains/base_images.bzl). A
    # validation action checks it against the pin: a wrong archive fails the build, and the
    # archive is used where it is, not copied.
    verified = ctx.actions.declare_file(ctx.label.name + ".verified")
    ctx.actions.run_shell(
        command = '"$1" oci verify "$2" --digest "$3" >"$4"',
        arguments = [ctx.executable._icos.path, ctx.file.archive.path, ctx.attr.digest, verified.path],
        inputs = [ctx.file.archive],
        tools = [ctx.executable._icos],
        outputs = [verified],
        mnemonic = "PinnedImage",
        progress_message = "Checking the pinned image %{label} (" + ctx.attr.pin + ")",
    )
    archive = ctx.file.archive
    return [
        DefaultInfo(files = depset([archive])),
        ContainerImageInfo(archive = archive),
        PinnedInputsInfo(base_images = depset([ctx.attr.reference])),
        OutputGroupInfo(_validation = depset([verified])),
    ]

pinned_image = rule(
    implementation = _pinned_image_impl,
    doc = "An OCI archive from the store, checked against the digest of its pin file.",
    attrs = dict({
        "archive": attr.label(allow_single_file = [".oci.tar"], mandatory = True, doc = "The OCI archive."),
        "digest": attr.string(mandatory = True, doc = "The manifest digest the pin names, sha256:<hex>."),
        "reference": attr.string(mandatory = True, doc = "What the pin names, <name>@sha256:<hex>, for build records."),
        "pin": attr.string(mandatory = True, doc = "The pin file, for messages."),
    }, **ICOS_ATTRS),
)

def _build_args(ctx):
    args = []
    for name, value in sorted(ctx.attr.build_args.items()):
        args += ["--build-arg", "{}={}".format(name, value)]
    return args

def _context_args(ctx):
    args = ["--context", ctx.attr.context_dir or ctx.file.dockerfile.dirname]
    for directory in ctx.attr.shared_context_dirs:
        args += ["--context", directory]
    for file in ctx.files.executables:
        args += ["--executable", file.path]
    return args

_CONTAINER_ATTRS = dict({
    "dockerfile": attr.label(allow_single_file = True, mandatory = True, doc = "The Dockerfile."),
    "context_dir": attr.string(doc = "The build context, a directory of the workspace (such as ic-os/hostos/rootfs); the Dockerfile's directory when empty."),
    "shared_context_dirs": attr.string_list(doc = "Directories of the workspace merged into the build context after context_dir (a file in two of them is an error), such as the files every verity root adds."),
    "srcs": attr.label_list(allow_files = True, doc = "The files of the build context (under `context_dir` and `shared_context_dirs`)."),
    "executables": attr.label_list(allow_files = True, doc = "The files of `srcs` that are executable (0755) in the build context; every other file is 0644. Declared because the modes of a checkout do not reach a remote worker (REAPI makes every input file executable)."),
    "base": attr.label(providers = [ContainerImageInfo], mandatory = True, doc = "The base image."),
    "base_arg": attr.string(default = "BASE_IMAGE", doc = "The build argument that names the base image (`ARG BASE_IMAGE` + `FROM ${BASE_IMAGE}`)."),
    "build_args": attr.string_dict(doc = "Build arguments."),
}, **ICOS_ATTRS)

def _container_rootfs_impl(ctx):
    tar = ctx.actions.declare_file(output_name(ctx.label.name, ".tar"))
    manifest = ctx.actions.declare_file(ctx.label.name.removesuffix(".tar") + ".manifest.jsonl")
    podman = host_tool(ctx, "podman")
    base = ctx.attr.base[ContainerImageInfo].archive
    replacements = []
    for target, path in ctx.attr.replace.items():
        replacements += ["--replace", "{}={}".format(path, target.files.to_list()[0].path)]
    run_icos(
        ctx,
        arguments = ["container", "build", "--podman", podman.path, "--dockerfile", ctx.file.dockerfile.path] + _context_args(ctx) + ["--base", "{}={}".format(ctx.attr.base_arg, base.path), "--rootfs", tar.path, "--manifest", manifest.path] + _build_args(ctx) + replacements,
        inputs = ctx.files.srcs + ctx.files.replace + [ctx.file.dockerfile, base],
        outputs = [tar, manifest],
        env = podman.env,
        mnemonic = "ContainerRootfs",
        progress_message = "Building the root filesystem %{label}",
    )
    return [
        DefaultInfo(files = depset([tar])),
        RootfsTreeInfo(tar = tar, manifest = manifest),
        # A base built here rather than pinned has no pinned inputs to record.
        ctx.attr.base[PinnedInputsInfo] if PinnedInputsInfo in ctx.attr.base else PinnedInputsInfo(base_images = depset()),
    ]

container_rootfs = rule(
    implementation = _container_rootfs_impl,
    doc = """The root filesystem of a Dockerfile build, exported and canonicalised: sorted, numeric
owners, times clamped, /etc/machine-id empty, and the files container engines bind-mount replaced.""",
    attrs = dict(_CONTAINER_ATTRS, **{
        "replace": attr.label_keyed_string_dict(allow_files = True, doc = "File -> the path it replaces, such as /etc/hostname."),
    }),
    toolchains = [HOST_TOOLS_TOOLCHAIN],
)
