//! What runs on icos images: the A/B upgrade agent (`upgrade`, `grubenv`, `release`: verifying and
//! downloading signed bundles) and the SetupOS installer (`install`), with the formats they share
//! with the build (`layout`, `package` and the `image_source` it packages, `sha256sums`, `sparse`) and the FAT writer the installer
//! makes the configuration filesystem with. The image build (`icos`) depends on this crate, never
//! the other way: a change to a build-time module leaves the programs on the images, and so the
//! images, as they are.

pub mod fat;
pub mod fs_input;
pub mod grubenv;
pub mod hashing;
pub mod image_source;
pub mod install;
pub mod io_error;
pub mod layout;
pub mod output;
pub mod package;
pub mod release;
pub mod seed;
pub mod sha256sums;
pub mod size;
pub mod sparse;
pub mod tls;
pub mod upgrade;

#[cfg(test)]
mod tests {
    #[test]
    fn knows_the_version_cargo_toml_declares() {
        // Under Bazel the version comes from tools/icos-agent/BUILD.bazel: it must be Cargo.toml's.
        let version = env!("CARGO_PKG_VERSION");
        let manifest = include_str!("../Cargo.toml");
        assert!(manifest.lines().any(|line| line == format!("version = \"{version}\"")), "{version}");
    }
}
