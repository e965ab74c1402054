"""GRUB: the EFI binary and the GRUB environment block."""

load(":toolchains.bzl", "HOST_TOOLS_TOOLCHAIN", "ICOS_ATTRS", "host_tool", "run_icos")

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

def _grub_efi_impl(ctx):
    efi = ctx.actions.declare_file(ctx.label.name + ".efi")
    grub_mkimage = host_tool(ctx, "grub-mkimage")
    ctx.actions.run(
        executable = grub_mkimage.path,
        arguments = ["--format", "x86_64-efi", "--prefix", ctx.attr.prefix, "--output", efi.path] + ctx.attr.modules,
        outputs = [efi],
        env = grub_mkimage.env,
        mnemonic = "GrubMkimage",
        progress_message = "Building the GRUB EFI image %{label}",
    )
    return [DefaultInfo(files = depset([efi]))]

grub_efi = rule(
    implementation = _grub_efi_impl,
    doc = "A GRUB EFI binary (grub-mkimage -O x86_64-efi) with the given modules built in; grub-mkimage writes the same bytes on every run.",
    attrs = {
        "prefix": attr.string(default = "(,gpt2)/", doc = "Where GRUB finds grub.cfg: partition 2 of the disk it was loaded from."),
        "modules": attr.string_list(mandatory = True, doc = "The GRUB modules to build in."),
    },
    toolchains = [HOST_TOOLS_TOOLCHAIN],
)

def _grubenv_impl(ctx):
    env = ctx.actions.declare_file(ctx.label.name)
    run_icos(
        ctx,
        arguments = ["grubenv", "create", "--output", env.path] + ["{}={}".format(name, value) for name, value in sorted(ctx.attr.variables.items())],
        inputs = [],
        outputs = [env],
        mnemonic = "Grubenv",
        progress_message = "Writing the GRUB environment block %{label}",
    )
    return [DefaultInfo(files = depset([env]))]

grubenv = rule(
    implementation = _grubenv_impl,
    doc = "A GRUB environment block (1024 bytes, the bytes grub-editenv writes) holding the given variables, sorted by name.",
    attrs = dict({"variables": attr.string_dict(doc = "Variables, such as boot_alternative = A.")}, **ICOS_ATTRS),
)
