"""The toolchain rule of the host programs, and the helper actions use to run them."""

HostToolsInfo = provider(
    doc = "Host programs by name, with the version each printed.",
    fields = {
        "paths": "dict: program name -> absolute path in the build root",
        "versions": "dict: program name -> first line of its version output",
        "build_root": "string: the pinned image the build root was unpacked from, <name>@sha256:<digest>, or unknown",
        "kernel": "string: the kernel release (uname -r)",
        "sev_firmware": "File: the AmdSev OVMF that -sev variants are measured and started with",
        "sev_firmware_source": "string: the Debian package and version that ship it",
    },
)

def _host_tools_toolchain_impl(ctx):
    info = HostToolsInfo(
        paths = ctx.attr.paths,
        versions = ctx.attr.versions,
        build_root = ctx.attr.build_root,
        kernel = ctx.attr.kernel,
        sev_firmware = ctx.file.sev_firmware,
        sev_firmware_source = ctx.attr.sev_firmware_source,
    )
    return [platform_common.ToolchainInfo(host_tools = info)]

host_tools_toolchain = rule(
    implementation = _host_tools_toolchain_impl,
    doc = "Declares the host programs found by the host_tools repository rule.",
    attrs = {
        "paths": attr.string_dict(doc = "Program name -> absolute path.", mandatory = True),
        "versions": attr.string_dict(doc = "Program name -> version string.", mandatory = True),
        "build_root": attr.string(doc = "The build root's pinned image, or unknown.", mandatory = True),
        "kernel": attr.string(doc = "The kernel release.", mandatory = True),
        "sev_firmware": attr.label(doc = "The AmdSev OVMF image.", mandatory = True, allow_single_file = True),
        "sev_firmware_source": attr.string(doc = "The package and version that ship it.", mandatory = True),
    },
)
