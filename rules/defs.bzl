"""icos: reproducible, A/B-partitioned, GRUB/EFI-bootable disk images from container builds.

Public API. An OS is data (`icos_os`: its partition table, optional LVM volumes, boot slots,
Dockerfile and base images); `icos_os_targets` makes what its variants share and `icos_build` one
variant. Every rule runs the icos tool (built from source by rules_rust) or a host program from
the host tools toolchain, whose versions are part of the action keys.
"""

load("//rules/private:bootloader.bzl", _grub_efi = "grub_efi", _grubenv = "grubenv")
load("//rules/private:container.bzl", _container_rootfs = "container_rootfs", _pinned_image = "pinned_image")
load("//rules/private:icos_build.bzl", _ab_slots = "ab_slots", _build_context = "build_context", _icos_build = "icos_build", _icos_os = "icos_os", _icos_os_targets = "icos_os_targets")
load("//rules/private:images.bzl", _assembly_test = "assembly_test", _disk_image = "disk_image", _ext4_image = "ext4_image", _file_tree = "file_tree", _package = "package", _placed_file = "placed_file", _placed_files = "placed_files", _rootfs_split = "rootfs_split", _sha256sums = "sha256sums", _upgrade_image = "upgrade_image", _vfat_image = "vfat_image")
load("//rules/private:layout.bzl", _os_layout = "os_layout")
load("//rules/private:providers.bzl", _AssemblyInfo = "AssemblyInfo", _ContainerImageInfo = "ContainerImageInfo", _OsLayoutInfo = "OsLayoutInfo", _PartitionImageInfo = "PartitionImageInfo", _PlacedFileInfo = "PlacedFileInfo", _PlacedFilesInfo = "PlacedFilesInfo", _RootfsTreeInfo = "RootfsTreeInfo", _SevLaunchInfo = "SevLaunchInfo")
load("//rules/private:release.bzl", _release_bundle = "release_bundle")
load("//rules/private:sev.bzl", _sev_launch_files = "sev_launch_files")
load("//rules/private:version.bzl", _derived_version = "derived_version", _version_flag = "version_flag", _version_txt = "version_txt")
load("//rules/private:vm.bzl", _boot_test = "boot_test", _local_vm = "local_vm")

AssemblyInfo = _AssemblyInfo
ContainerImageInfo = _ContainerImageInfo
OsLayoutInfo = _OsLayoutInfo
PartitionImageInfo = _PartitionImageInfo
PlacedFileInfo = _PlacedFileInfo
PlacedFilesInfo = _PlacedFilesInfo
RootfsTreeInfo = _RootfsTreeInfo
SevLaunchInfo = _SevLaunchInfo

ab_slots = _ab_slots
assembly_test = _assembly_test
boot_test = _boot_test
build_context = _build_context
container_rootfs = _container_rootfs
derived_version = _derived_version
disk_image = _disk_image
ext4_image = _ext4_image
file_tree = _file_tree
grub_efi = _grub_efi
grubenv = _grubenv
icos_build = _icos_build
icos_os = _icos_os
icos_os_targets = _icos_os_targets
local_vm = _local_vm
os_layout = _os_layout
package = _package
pinned_image = _pinned_image
placed_file = _placed_file
placed_files = _placed_files
release_bundle = _release_bundle
rootfs_split = _rootfs_split
sev_launch_files = _sev_launch_files
sha256sums = _sha256sums
upgrade_image = _upgrade_image
vfat_image = _vfat_image
version_flag = _version_flag
version_txt = _version_txt
