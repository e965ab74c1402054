"""An OS's disk layout as data: icos layout resolves it into layout.json, boot_args and grub.cfg."""

load(":providers.bzl", "OsLayoutInfo")
load(":toolchains.bzl", "ICOS_ATTRS", "run_icos")

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

def _slot_argument(slot, members):
    return "{}:{}".format(slot, ",".join(["{}={}".format(role, target) for role, target in sorted(members.items())]))

def _os_layout_impl(ctx):
    outputs = {name: ctx.actions.declare_file("{}/{}".format(ctx.label.name, name)) for name in ["layout.json", "boot_args", "grub.cfg"]}
    args = [
        "layout",
        "--partitions",
        ctx.file.partitions.path,
        "--seed",
        ctx.attr.seed,
        "--grub-partition",
        ctx.attr.grub_partition,
        "--kernel-args",
        ctx.attr.kernel_args,
        "--layout-json",
        outputs["layout.json"].path,
        "--boot-args",
        outputs["boot_args"].path,
        "--grub-cfg-template",
        ctx.file.grub_cfg_template.path,
        "--grub-cfg",
        outputs["grub.cfg"].path,
    ]
    if ctx.attr.verity_root:
        args.append("--verity-root")
    for mount in ctx.attr.mounts:
        args += ["--mount", mount]
    for slot in sorted(ctx.attr.slots.keys()):
        args += ["--slot", _slot_argument(slot, json.decode(ctx.attr.slots[slot]))]
    inputs = [ctx.file.partitions, ctx.file.grub_cfg_template]
    if ctx.file.volumes:
        args += ["--volumes", ctx.file.volumes.path, "--lvm-partition", ctx.attr.lvm_partition, "--vg-name", ctx.attr.vg_name]
        inputs.append(ctx.file.volumes)
    run_icos(
        ctx,
        arguments = args,
        inputs = inputs,
        outputs = outputs.values(),
        mnemonic = "OsLayout",
        progress_message = "Resolving the layout %{label}",
    )
    return [
        DefaultInfo(files = depset(outputs.values())),
        OutputGroupInfo(**{name.replace(".", "_"): depset([file]) for name, file in outputs.items()}),
        OsLayoutInfo(
            layout_json = outputs["layout.json"],
            boot_args = outputs["boot_args"],
            grub_cfg = outputs["grub.cfg"],
            partitions = ctx.file.partitions,
            seed = ctx.attr.seed,
            slots = {slot: json.decode(members) for slot, members in ctx.attr.slots.items()},
        ),
    ]

os_layout = rule(
    implementation = _os_layout_impl,
    doc = """The layout of an OS's disk, resolved by `icos layout`: NAME/layout.json (every partition and
volume with its size and the UUID its filesystem identifiers derive from, and the slots; installed on
the image for the upgrade agent), NAME/boot_args (each slot's kernel command line) and NAME/grub.cfg
(the template with the slots' devices). Nothing else repeats the layout.""",
    attrs = dict({
        "partitions": attr.label(allow_single_file = [".csv"], mandatory = True, doc = "The partition table (partitions.csv)."),
        "volumes": attr.label(allow_single_file = [".csv"], doc = "The logical volumes (volumes.csv) of the LVM volume group in `lvm_partition`."),
        "lvm_partition": attr.string(doc = "The partition that holds the LVM physical volume (with `volumes`)."),
        "vg_name": attr.string(doc = "The volume group's name (with `volumes`)."),
        "slots": attr.string_dict(mandatory = True, doc = """Slot name (A, and B for an A/B OS) -> JSON object of role (boot, root, var) -> the
partition or volume that holds it; see `ab_slots`."""),
        "seed": attr.string(mandatory = True, doc = "The build seed (a UUID): identifiers the tables leave empty derive from it."),
        "grub_partition": attr.string(default = "grub", doc = "The GRUB partition (partition 2), which holds grub.cfg and grubenv."),
        "kernel_args": attr.string(doc = "Kernel arguments of every slot besides root and the mounts, such as `rw console=ttyS0,115200`."),
        "verity_root": attr.bool(doc = """Each slot's root is a verity root: the initramfs opens it with dm-verity, the kernel mounts
the verified device, and boot_args hold a placeholder for the root hash (verity_boot_args fills it in)."""),
        "mounts": attr.string_list(doc = """Partitions or volumes every slot mounts besides its own members, as
TARGET:PATH:FSTYPE[:OPTIONS] (such as `data:/mnt/data:ext4:ro`): systemd.mount-extra= on each slot's
command line."""),
        "grub_cfg_template": attr.label(allow_single_file = True, mandatory = True, doc = "The GRUB configuration with an @ICOS_LAYOUT@ line."),
    }, **ICOS_ATTRS),
)
