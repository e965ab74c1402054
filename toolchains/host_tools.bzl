"""The host programs that image actions drive, found once per build root and pinned by version.

A repository rule looks each program up (PATH, then the sbin directories) and asks it for its
version. The versions become part of every action that runs the program, so upgrading e2fsprogs,
podman or GRUB in the build root changes the action keys instead of silently changing outputs.
It also reads what build records name besides the programs: the build root's digest (which
ci/container/container-run.sh writes to BUILD_ROOT_FILE) and the kernel release.
"""

# Program name -> arguments that make it print its version.
HOST_TOOLS = {
    "grub-mkimage": ["--version"],
    "mke2fs": ["-V"],
    "mmdebstrap": ["--version"],
    "podman": ["--version"],
    "qemu-system-x86_64": ["--version"],
}

# The AmdSev OVMF that -sev variants are measured with and that their hosts start them with, and
# the Debian package that ships it. The repository links it, so that Bazel hashes it as an input of
# every action that reads it.
SEV_FIRMWARE = "/usr/share/ovmf/OVMF.amdsev.fd"
SEV_FIRMWARE_PACKAGE = "ovmf"

# Where container-run.sh records the pinned image the build root was unpacked from.
BUILD_ROOT_FILE = "/etc/icos/build-root"

_SEARCH_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

def _find(rctx, name):
    found = rctx.which(name)
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = rctx.path(directory + "/" + name)
        if candidate.exists:
            return candidate
    return None

def _host_tools_repository_impl(rctx):
    paths = {}
    versions = {}
    missing = []
    for name, version_args in HOST_TOOLS.items():
        path = _find(rctx, name)
        if not path:
            missing.append(name)
            continue

        # A package upgrade replaces the binary: watching it makes Bazel look again.
        rctx.watch(path)
        result = rctx.execute([path] + version_args)
        output = (result.stdout + result.stderr).strip()
        if result.return_code != 0 or not output:
            fail("icos host tools: `{} {}` failed ({}): {}".format(path, " ".join(version_args), result.return_code, output))
        paths[name] = str(path)
        versions[name] = output.splitlines()[0]
    if missing:
        fail("icos host tools: {} not found. Run Bazel inside the build root: ci/container/container-run.sh bazel ...".format(", ".join(missing)))

    firmware = rctx.path(SEV_FIRMWARE)
    if not firmware.exists:
        fail("icos host tools: {} not found (Debian package {}). Run Bazel inside the build root: ci/container/container-run.sh bazel ...".format(SEV_FIRMWARE, SEV_FIRMWARE_PACKAGE))
    rctx.watch(firmware)
    rctx.symlink(firmware, firmware.basename)
    package = rctx.execute(["dpkg-query", "--show", "--showformat=${Package} ${Version}", SEV_FIRMWARE_PACKAGE])
    if package.return_code != 0:
        fail("icos host tools: `dpkg-query --show {}` failed: {}".format(SEV_FIRMWARE_PACKAGE, package.stderr))

    build_root_file = rctx.path(BUILD_ROOT_FILE)
    rctx.watch(build_root_file)
    build_root = rctx.read(build_root_file).strip() if build_root_file.exists else "unknown"
    uname = rctx.execute(["uname", "-r"])
    if uname.return_code != 0:
        fail("icos host tools: `uname -r` failed: " + uname.stderr)

    rctx.file("BUILD.bazel", """\
load("@icos//toolchains:host_tools_toolchain.bzl", "host_tools_toolchain")

exports_files([{sev_firmware}])

host_tools_toolchain(
    name = "host_tools",
    paths = {paths},
    versions = {versions},
    build_root = {build_root},
    kernel = {kernel},
    sev_firmware = {sev_firmware},
    sev_firmware_source = {sev_firmware_source},
)

toolchain(
    name = "toolchain",
    toolchain = ":host_tools",
    toolchain_type = "@icos//toolchains:host_tools_type",
)
""".format(
        paths = repr(paths),
        versions = repr(versions),
        build_root = repr(build_root),
        kernel = repr(uname.stdout.strip()),
        sev_firmware = repr(firmware.basename),
        sev_firmware_source = repr(package.stdout.strip()),
    ))

host_tools_repository = repository_rule(
    implementation = _host_tools_repository_impl,
    doc = "Finds the host programs of HOST_TOOLS and records their paths and versions, and links SEV_FIRMWARE.",
    local = True,
    configure = True,
)

def _host_tools_extension_impl(module_ctx):
    host_tools_repository(name = "icos_host_tools")
    return module_ctx.extension_metadata(reproducible = False)

host_tools = module_extension(
    implementation = _host_tools_extension_impl,
    doc = "Creates @icos_host_tools, whose toolchain gives image rules the host programs.",
)
