"""Release bundles signed in the build, with keys that are no secret."""

load(":toolchains.bzl", "ICOS_ATTRS", "output_name", "run_icos")

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")

def _release_bundle_impl(ctx):
    bundle = ctx.actions.declare_file(output_name(ctx.label.name, ".tar"))
    run_icos(
        ctx,
        arguments = [
            "release",
            "package",
            "--key",
            ctx.file.key.path,
            "--os",
            ctx.attr.os,
            "--variant",
            ctx.attr.variant,
            "--version-file",
            ctx.file.version.path,
            "--output",
            bundle.path,
        ] + [file.path for file in ctx.files.srcs],
        inputs = [ctx.file.key, ctx.file.version] + ctx.files.srcs,
        outputs = [bundle],
        mnemonic = "ReleaseBundle",
        progress_message = "Signing the release bundle %{label}",
    )
    return [DefaultInfo(files = depset([bundle]))]

release_bundle = rule(
    implementation = _release_bundle_impl,
    doc = """A release bundle (`icos release package`) signed in the build: for test and dev keys only,
whose private half is public anyway (ic-os/components/release-keys). A real release key never
enters a build or its caches: its bundles are made with `icos release package` after the build.""",
    attrs = dict({
        "srcs": attr.label_list(allow_files = True, mandatory = True, doc = "The files to bundle, in this order; each goes in under its base name. An upgrade reads the bundle as far as update-img.tar.zst, so it comes first."),
        "key": attr.label(allow_single_file = True, mandatory = True, doc = "The Ed25519 private key, PKCS#8 PEM: a key that is no secret."),
        "os": attr.string(mandatory = True, doc = "The OS the manifest names, such as guestos."),
        "variant": attr.string(mandatory = True, doc = "The variant the manifest names, such as dev."),
        "version": attr.label(allow_single_file = True, mandatory = True, doc = "The variant's version.txt."),
    }, **ICOS_ATTRS),
)
