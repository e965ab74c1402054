"""Build records: what built a published image, next to its SHA256SUMS (build-record.json)."""

load(":providers.bzl", "PinnedInputsInfo")
load(":toolchains.bzl", "HOST_TOOLS_TOOLCHAIN", "ICOS_ATTRS", "run_icos")

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

def _source_state_impl(ctx):
    # Bazel's stable-status.txt also holds the host and user names: only the commit and tree state
    # are copied out, so that records (and their cache keys) do not depend on who built them.
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    run_icos(
        ctx,
        arguments = ["build-record", "source", "--workspace-status", ctx.info_file.path, "--output", out.path],
        inputs = [ctx.info_file],
        outputs = [out],
        mnemonic = "SourceState",
        progress_message = "Reading the commit of the workspace",
    )
    return [DefaultInfo(files = depset([out]))]

source_state = rule(
    implementation = _source_state_impl,
    doc = """The commit and tree state (clean or modified) of the workspace, from the workspace
status that ci/tools/workspace-status prints (.bazelrc sets it).""",
    attrs = ICOS_ATTRS,
)

def _build_record_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name)
    tools = ctx.toolchains[HOST_TOOLS_TOOLCHAIN].host_tools
    args = [
        "build-record",
        "write",
        "--output",
        out.path,
        "--image",
        ctx.attr.image,
        "--source",
        ctx.file._source_state.path,
        "--build-root",
        tools.build_root,
        "--kernel",
        tools.kernel,
    ]
    for reference in ctx.attr.rootfs[PinnedInputsInfo].base_images.to_list():
        args += ["--base-image", reference]
    for name, version in sorted(tools.versions.items()):
        args += ["--host-tool", "{}={}".format(name, version)]
    run_icos(
        ctx,
        arguments = args,
        inputs = [ctx.file._source_state],
        outputs = [out],
        mnemonic = "BuildRecord",
        progress_message = "Recording what built %{label}",
    )
    return [DefaultInfo(files = depset([out]))]

build_record = rule(
    implementation = _build_record_impl,
    doc = """build-record.json: the commit and tree state, build root, pinned base images, host program
versions, kernel release and icos version that built an image. repro-check reads it to rebuild
with the same inputs and to name the inputs that differ.""",
    attrs = dict({
        "image": attr.string(mandatory = True, doc = "The image, <os>/<variant>."),
        "rootfs": attr.label(mandatory = True, providers = [PinnedInputsInfo], doc = "The container rootfs the image is made from (its base images are recorded)."),
        "_source_state": attr.label(default = "//rules/private:source_state", allow_single_file = True),
    }, **ICOS_ATTRS),
    toolchains = [HOST_TOOLS_TOOLCHAIN],
)
