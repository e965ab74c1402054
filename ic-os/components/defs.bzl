"""What every icos OS carries: the parts shared by the OS definitions under ic-os/."""

# The A/B upgrade agent (tools/icos/src/upgrade) and the unit that reports the booted slot on the
# console, as `root_inject` of icos_build. /grub, where the agent finds grubenv, is mounted by the
# OS's boot_args.
UPGRADE_AGENT_INJECT = {
    "//tools/icos:icos-agent": "0755:0:0:/opt/icos/bin/icos-agent",
    "//ic-os/components/upgrade-agent:icos-boot-report.service": "0644:0:0:/etc/systemd/system/icos-boot-report.service",
    "//ic-os/components/upgrade-agent:multi-user-wants-boot-report.conf": "0644:0:0:/etc/systemd/system/multi-user.target.d/icos-boot-report.conf",
}
