"""Access to the programs that image actions run: the icos tool and the host tools."""

# Loaded only through //rules:defs.bzl.
visibility("//rules/...")


HOST_TOOLS_TOOLCHAIN = "//toolchains:host_tools_type"

# Attributes every image rule has: the icos tool, built from source for the execution platform.
ICOS_ATTRS = {
    "_icos": attr.label(
        default = "//tools/icos",
        executable = True,
        cfg = "exec",
        doc = "The icos tool.",
    ),
}

def output_name(name, extension):
    """The target's name when it already ends in `extension` (rootfs-tree.tar), else name + extension."""
    return name if name.endswith(extension) else name + extension

def host_tool(ctx, name):
    """The path of host program NAME and the environment that puts its version in the action key.

    Args:
        ctx: the rule context; the rule must declare HOST_TOOLS_TOOLCHAIN.
        name: a program of the host tools toolchain, such as "mke2fs".

    Returns:
        struct(path, env): the absolute path, and {ICOS_HOST_TOOL_<NAME>: version}.
    """
    tools = ctx.toolchains[HOST_TOOLS_TOOLCHAIN].host_tools
    if name not in tools.paths:
        fail("host tool {} is not in the host tools toolchain".format(name))
    env_name = "ICOS_HOST_TOOL_" + name.upper().replace("-", "_")
    return struct(path = tools.paths[name], env = {env_name: tools.versions[name]})

def run_icos(ctx, *, arguments, inputs, outputs, mnemonic, progress_message, tools = [], env = {}, execution_requirements = {}):
    """Runs the icos tool with a fixed environment (the time is SOURCE_DATE_EPOCH=0)."""
    ctx.actions.run(
        executable = ctx.executable._icos,
        arguments = arguments,
        inputs = inputs,
        outputs = outputs,
        tools = tools,
        mnemonic = mnemonic,
        progress_message = progress_message,
        env = dict({"SOURCE_DATE_EPOCH": "0", "LC_ALL": "C.UTF-8", "TZ": "UTC"}, **env),
        execution_requirements = execution_requirements,
    )
