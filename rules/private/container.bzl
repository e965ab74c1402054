"""Container builds: a Debian bootstrap, Dockerfile images and their root filesystems."""

load(":providers.bzl", "ContainerImageInfo", "RootfsTreeInfo")
load(":toolchains.bzl", "HOST_TOOLS_TOOLCHAIN", "ICOS_ATTRS", "host_tool", "output_name", "run_icos")

# Container and bootstrap actions reach the Debian archive until base images are pinned.
_NETWORK = {"requires-network": "1"}

def _debian_bootstrap_impl(ctx):
    # The bootstrap tar and a Dockerfile that imports it share a directory: the build context.
    bootstrap = ctx.actions.declare_file(ctx.label.name + "_context/bootstrap.tar")
    dockerfile = ctx.actions.declare_file(ctx.label.name + "_context/Dockerfile")
    ctx.actions.write(dockerfile, "FROM scratch\nADD bootstrap.tar /\n")
    mmdebstrap = host_tool(ctx, "mmdebstrap")
    args = ctx.actions.args()
    args.add_all(["--mode=root", "--variant=" + ctx.attr.variant, "--format=tar", "--quiet"])
    args.add("--aptopt=Acquire::Check-Valid-Until \"false\"")
    if ctx.attr.packages:
        args.add("--include=" + ",".join(ctx.attr.packages))
    args.add_all([ctx.attr.suite, bootstrap, ctx.attr.mirror])
    ctx.actions.run(
        executable = mmdebstrap.path,
        arguments = [args],
        outputs = [bootstrap],
        mnemonic = "DebianBootstrap",
        progress_message = "Bootstrapping Debian %s for %%{label}" % ctx.attr.suite,
        env = dict({"SOURCE_DATE_EPOCH": str(ctx.attr.source_date_epoch), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, **mmdebstrap.env),
        execution_requirements = _NETWORK,
    )

    # As an OCI archive, so that a Dockerfile can start FROM it.
    archive = ctx.actions.declare_file(ctx.label.name + ".oci.tar")
    podman = host_tool(ctx, "podman")
    run_icos(
        ctx,
        arguments = ["container", "build", "--podman", podman.path, "--dockerfile", dockerfile.path, "--context", dockerfile.dirname, "--oci-archive", archive.path],
        inputs = [dockerfile, bootstrap],
        outputs = [archive],
        env = podman.env,
        mnemonic = "ContainerImage",
        progress_message = "Importing the Debian bootstrap %{label}",
    )
    return [
        DefaultInfo(files = depset([archive])),
        ContainerImageInfo(archive = archive),
    ]

debian_bootstrap = rule(
    implementation = _debian_bootstrap_impl,
    doc = "A minimal Debian system from mmdebstrap, as an OCI archive to build images FROM.",
    attrs = dict({
        "suite": attr.string(mandatory = True, doc = "The Debian suite, such as trixie."),
        "mirror": attr.string(default = "http://deb.debian.org/debian", doc = "The Debian archive."),
        "variant": attr.string(default = "apt", doc = "The mmdebstrap variant."),
        "packages": attr.string_list(doc = "Extra packages to include."),
        "source_date_epoch": attr.int(default = 0, doc = "Timestamps of the bootstrap."),
    }, **ICOS_ATTRS),
    toolchains = [HOST_TOOLS_TOOLCHAIN],
)

def _build_args(ctx):
    args = []
    for name, value in sorted(ctx.attr.build_args.items()):
        args += ["--build-arg", "{}={}".format(name, value)]
    return args

def _context_dir(ctx):
    return ctx.file.dockerfile.dirname

def _container_image_impl(ctx):
    archive = ctx.actions.declare_file(ctx.label.name + ".oci.tar")
    podman = host_tool(ctx, "podman")
    base = ctx.attr.base[ContainerImageInfo].archive
    run_icos(
        ctx,
        arguments = ["container", "build", "--podman", podman.path, "--dockerfile", ctx.file.dockerfile.path, "--context", _context_dir(ctx), "--base", "{}={}".format(ctx.attr.base_arg, base.path), "--oci-archive", archive.path] + _build_args(ctx),
        inputs = ctx.files.srcs + [ctx.file.dockerfile, base],
        outputs = [archive],
        env = podman.env,
        mnemonic = "ContainerImage",
        progress_message = "Building container image %{label}",
        execution_requirements = _NETWORK,
    )
    return [
        DefaultInfo(files = depset([archive])),
        ContainerImageInfo(archive = archive),
    ]

_CONTAINER_ATTRS = dict({
    "dockerfile": attr.label(allow_single_file = True, mandatory = True, doc = "The Dockerfile; its directory is the build context."),
    "srcs": attr.label_list(allow_files = True, doc = "The files of the build context (under the Dockerfile's directory)."),
    "base": attr.label(providers = [ContainerImageInfo], mandatory = True, doc = "The base image."),
    "base_arg": attr.string(default = "BASE_IMAGE", doc = "The build argument that names the base image (`ARG BASE_IMAGE` + `FROM ${BASE_IMAGE}`)."),
    "build_args": attr.string_dict(doc = "Build arguments."),
}, **ICOS_ATTRS)

container_image = rule(
    implementation = _container_image_impl,
    doc = "A container image built from a Dockerfile FROM another image, as an OCI archive.",
    attrs = _CONTAINER_ATTRS,
    toolchains = [HOST_TOOLS_TOOLCHAIN],
)

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
        arguments = ["container", "build", "--podman", podman.path, "--dockerfile", ctx.file.dockerfile.path, "--context", _context_dir(ctx), "--base", "{}={}".format(ctx.attr.base_arg, base.path), "--rootfs", tar.path, "--manifest", manifest.path] + _build_args(ctx) + replacements,
        inputs = ctx.files.srcs + ctx.files.replace + [ctx.file.dockerfile, base],
        outputs = [tar, manifest],
        env = podman.env,
        mnemonic = "ContainerRootfs",
        progress_message = "Building the root filesystem %{label}",
    )
    return [
        DefaultInfo(files = depset([tar])),
        RootfsTreeInfo(tar = tar, manifest = manifest),
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
