"""The launch files of -sev variants: kernel, initrd and command lines for a direct SEV-SNP boot,
and their launch measurements (icos measure launch-files)."""

load(":providers.bzl", "SevLaunchInfo")
load(":toolchains.bzl", "HOST_TOOLS_TOOLCHAIN", "ICOS_ATTRS", "run_icos")

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

def _sev_launch_files_impl(ctx):
    tools = ctx.toolchains[HOST_TOOLS_TOOLCHAIN].host_tools
    firmware = tools.sev_firmware
    prefix = ctx.label.name + "/"
    kernel = ctx.actions.declare_file(prefix + "vmlinuz")
    initrd = ctx.actions.declare_file(prefix + "initrd.img")
    measurements = ctx.actions.declare_file(prefix + "launch-measurements.json")
    cmdlines = {slot: ctx.actions.declare_file(prefix + "cmdline-" + slot) for slot in ctx.attr.slots}
    arguments = ctx.actions.args()
    arguments.add_all(["measure", "launch-files"])
    arguments.add("--boot-partition", ctx.file.boot_partition)
    for slot in ctx.attr.slots:
        arguments.add("--slot", slot)
    arguments.add("--ovmf", firmware)
    arguments.add("--ovmf-source", tools.sev_firmware_source)
    for config in ctx.attr.configs:
        arguments.add("--config", config)
    arguments.add("--output-dir", kernel.dirname)
    run_icos(
        ctx,
        arguments = [arguments],
        inputs = [ctx.file.boot_partition, firmware],
        outputs = [kernel, initrd, measurements] + cmdlines.values(),
        mnemonic = "IcosSevLaunchFiles",
        progress_message = "Measuring the SEV-SNP launch of %{label}",
    )
    output_groups = {"cmdline_" + slot: depset([file]) for slot, file in cmdlines.items()}
    return [
        DefaultInfo(files = depset([kernel, initrd, measurements] + cmdlines.values())),
        OutputGroupInfo(
            kernel = depset([kernel]),
            initrd = depset([initrd]),
            measurements = depset([measurements]),
            firmware = depset([firmware]),
            **output_groups
        ),
        SevLaunchInfo(
            kernel = kernel,
            initrd = initrd,
            cmdlines = cmdlines,
            measurements = measurements,
            firmware = firmware,
            vcpus = int(ctx.attr.configs[0].split(":")[0]),
            vcpu_type = ctx.attr.configs[0].split(":")[1],
        ),
    ]

sev_launch_files = rule(
    implementation = _sev_launch_files_impl,
    doc = """The launch files of a variant, in the directory NAME/: vmlinuz and initrd.img from its boot
partition (where GRUB reads them), cmdline-<slot> (the slot's command line from /boot_args, root
hash included, no newline) and launch-measurements.json (the SEV-SNP launch digest of each slot and
vCPU configuration, with the firmware's SHA-256 and OVMF hash and every other input). The firmware is
the host tools toolchain's AmdSev OVMF, an input of the action.

Output groups, for placing one file elsewhere (a host that starts the guest): kernel, initrd,
cmdline_<slot>, measurements and firmware.
""",
    attrs = dict({
        "boot_partition": attr.label(mandatory = True, allow_single_file = [".tzst"], doc = "The variant's partition-boot.tzst."),
        "slots": attr.string_list(mandatory = True, doc = "The slots to measure (A, or A and B)."),
        "configs": attr.string_list(
            mandatory = True,
            allow_empty = False,
            doc = "vCPU configurations VCPUS:VCPU_TYPE:GUEST_FEATURES; the first is the one launch-local-vm starts.",
        ),
    }, **ICOS_ATTRS),
    toolchains = [HOST_TOOLS_TOOLCHAIN],
)
