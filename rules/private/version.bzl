"""The version of an image: a build setting, written to version.txt."""

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")


VersionInfo = provider(doc = "The image version.", fields = {"version": "string"})

def _version_flag_impl(ctx):
    version = ctx.build_setting_value
    if not version or any([c in version for c in [" ", "\t", "\n", "/", "\\"]]):
        fail("{}: {!r} is not a version (no blanks or slashes)".format(ctx.label, version))
    return [VersionInfo(version = version)]

version_flag = rule(
    implementation = _version_flag_impl,
    doc = "A string flag holding the image version: --//ic-os:version=1.2.3.",
    build_setting = config.string(flag = True),
)

def _version_txt_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name)
    ctx.actions.write(out, ctx.attr.version[VersionInfo].version + "\n")
    return [DefaultInfo(files = depset([out]))]

version_txt = rule(
    implementation = _version_txt_impl,
    doc = "Writes the version (one line) to a file named like the target.",
    attrs = {"version": attr.label(mandatory = True, providers = [VersionInfo], doc = "The version flag.")},
)

def _derived_version_impl(ctx):
    return [VersionInfo(version = ctx.attr.version[VersionInfo].version + ctx.attr.suffix)]

derived_version = rule(
    implementation = _derived_version_impl,
    doc = "A version made from another by appending a suffix: a build whose version differs (upgrade tests).",
    attrs = {
        "version": attr.label(mandatory = True, providers = [VersionInfo], doc = "The version to extend."),
        "suffix": attr.string(mandatory = True, doc = "Appended to the version, such as \"-next\"."),
    },
)
