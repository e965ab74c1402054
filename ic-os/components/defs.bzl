"""What every icos OS carries: the parts shared by the OS definitions under ic-os/."""

load("//rules:defs.bzl", "build_context")

# The A/B upgrade agent (tools/icos-agent/src/upgrade), the unit that reports the booted slot on the
# console, and those of an upgrade's trial boot (a watchdog started early; the confirmation once the
# system is up and the health checks of /etc/icos/health.d pass): placed_file targets for icos_os's
# `root_files`. The agent reads the image's layout (/opt/icos/share/layout.json, added by
# icos_build) and finds grubenv on /grub, which the generated boot_args mount.
UPGRADE_AGENT_FILES = [
    "//ic-os/components/upgrade-agent:agent_file",
    "//ic-os/components/upgrade-agent:boot_report_service_file",
    "//ic-os/components/upgrade-agent:boot_report_wants_file",
    "//ic-os/components/upgrade-agent:trial_watchdog_service_file",
    "//ic-os/components/upgrade-agent:trial_watchdog_sysinit_wants_file",
    "//ic-os/components/upgrade-agent:trial_watchdog_emergency_wants_file",
    "//ic-os/components/upgrade-agent:boot_confirm_service_file",
    "//ic-os/components/upgrade-agent:boot_confirm_wants_file",
    "//ic-os/components/upgrade-agent:no_failed_units_check_file",
]

# The upgrade channel of the OSes with two slots (icos-agent serve on port 8180): how an image
# nobody logs in to (prod) takes signed upgrades.
UPGRADE_CHANNEL_FILES = [
    "//ic-os/components/upgrade-agent:upgrade_channel_service_file",
    "//ic-os/components/upgrade-agent:upgrade_channel_wants_file",
]

# The release keys each build type trusts (icos_os's `release_keys`): dev images the dev key, prod
# images the keys of --//ic-os/components/release-keys:prod, none by default.
RELEASE_KEYS = {
    "dev": "//ic-os/components/release-keys:dev_keys",
    "prod": "//ic-os/components/release-keys:prod_keys",
}

# What applies the node's configuration at boot: config.ini on the OS's config volume or partition,
# mounted read-only at /mnt/config (icos_os(mounts)), sets the host name and the network
# (icos-agent apply-config, so UPGRADE_AGENT_FILES come with it).
NODE_CONFIG_FILES = [
    "//ic-os/components/node-config:service_file",
    "//ic-os/components/node-config:wants_file",
]

# The same for a VM whose host attaches a configuration disk (HostOS's GuestOS: a FAT filesystem
# labelled CONFIG, read without mounting it); a VM started without one applies nothing.
GUEST_NODE_CONFIG_FILES = [
    "//ic-os/components/node-config:guest_service_file",
    "//ic-os/components/node-config:guest_wants_file",
]

# The build context every OS with a verity root adds (icos_os(shared_contexts)): the initramfs-tools
# hook and script that open the root with veritysetup --panic-on-corruption before it is mounted.
VERITY_ROOT_CONTEXT = {"ic-os/components/rootfs/verity": build_context(
    srcs = "//ic-os/components/rootfs:verity_srcs",
    executables = ["//ic-os/components/rootfs:verity_executables"],
)}

# The build context every OS that runs only as a virtual machine adds (icos_os(shared_contexts)):
# an initramfs with the modules that mount its root rather than every machine's storage drivers.
VIRTUAL_MACHINE_CONTEXT = {"ic-os/components/rootfs/virtual-machine": build_context(
    srcs = "//ic-os/components/rootfs:virtual_machine_srcs",
)}

def base_image_context(name = "context"):
    """The package lists, locks and base image pins of an OS (ic-os/<os>/context).

    Args:
        name: the filegroup of the package lists and locks (icos base-image build's context).
    """
    native.exports_files(native.glob(["docker-base.*"]), visibility = ["//visibility:public"])
    native.filegroup(name = name, srcs = native.glob(["packages.*"]), visibility = ["//visibility:public"])
