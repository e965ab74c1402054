//! Applying a node's configuration at boot (`icos-agent apply-config`): the `config.ini` that
//! SetupOS's installer copied into HostOS's config volume, or that HostOS put on the configuration
//! disk of its GuestOS VM ([`guest_config_ini`]). The host name is set in the kernel (for this
//! boot; the file is read again at the next), and the network becomes a systemd-networkd unit in
//! `/run`, which networkd, started after, brings up.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::config::{parse_config, ConfigError, InstallConfig, Network};
use super::CONFIG_INI;
use crate::io_error::PathIoError;
use crate::output::{write_file_atomically, WriteFileError};

/// The name of the networkd unit written: before the image's own units, so that it wins.
pub const NETWORK_UNIT: &str = "10-icos-config.network";

/// The systemd-networkd unit for `config`: every Ethernet interface, by DHCP or with the static
/// addresses, gateways and DNS servers.
pub fn network_unit(config: &InstallConfig) -> String {
    let mut text = String::from(
        "# Written at boot by icos-agent apply-config from config.ini.\n[Match]\nType=ether\n\n[Network]\n",
    );
    match &config.network {
        Network::Dhcp => text.push_str("DHCP=yes\n"),
        Network::Static { ipv4, ipv6 } => {
            if let Some(ipv4) = ipv4 {
                let _ = writeln!(text, "Address={}/{}\nGateway={}", ipv4.address, ipv4.prefix, ipv4.gateway);
            }
            if let Some(ipv6) = ipv6 {
                let _ = writeln!(text, "Address={}/{}\nGateway={}", ipv6.address, ipv6.prefix, ipv6.gateway);
            }
            // No router advertisements decide what a static node's addresses are.
            text.push_str("IPv6AcceptRA=no\n");
        }
    }
    for server in &config.dns_servers {
        let _ = writeln!(text, "DNS={server}");
    }
    text
}

/// One line saying what was applied.
pub fn summary(config: &InstallConfig) -> String {
    let network = match &config.network {
        Network::Dhcp => "DHCP".to_owned(),
        Network::Static { ipv4, ipv6 } => [
            ipv4.map(|a| format!("{}/{} via {}", a.address, a.prefix, a.gateway)),
            ipv6.map(|a| format!("{}/{} via {}", a.address, a.prefix, a.gateway)),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and "),
    };
    format!("hostname {}, network {network}", config.hostname)
}

/// Writes the network unit into `network_dir` (created if missing).
pub fn write_network_unit(config: &InstallConfig, network_dir: &Path) -> Result<(), WriteFileError> {
    std::fs::create_dir_all(network_dir).map_err(PathIoError::with("create", network_dir))?;
    write_file_atomically(&network_dir.join(NETWORK_UNIT), network_unit(config).as_bytes())
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot read the FAT filesystem on {device}: {source}")]
    Fat { device: PathBuf, source: io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The config.ini of the FAT filesystem on `device` (a configuration disk), or `None` when it
/// holds none.
pub fn read_config_from_fat(device: &Path) -> Result<Option<InstallConfig>, ApplyError> {
    let fat_error = |source| ApplyError::Fat { device: device.to_owned(), source };
    let file = File::open(device).map_err(fat_error)?;
    let filesystem =
        fatfs::FileSystem::new(fscommon::BufStream::new(file), fatfs::FsOptions::new()).map_err(fat_error)?;
    let mut bytes = Vec::new();
    match filesystem.root_dir().open_file(CONFIG_INI) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(fat_error)?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(fat_error(error)),
    };
    Ok(Some(parse_config(&device.join(CONFIG_INI), &bytes)?))
}

/// The configuration HostOS hands its GuestOS VM: the host's name with `-guestos` after its first
/// label (shortened to fit a label's 63 characters), and DHCP on the VM's network, which HostOS's
/// QEMU provides.
pub fn guest_config_ini(host: &InstallConfig) -> String {
    const SUFFIX: &str = "-guestos";
    let (label, domain) = match host.hostname.split_once('.') {
        Some((label, domain)) => (label, format!(".{domain}")),
        None => (host.hostname.as_str(), String::new()),
    };
    let label = &label[..label.len().min(63 - SUFFIX.len())];
    let label = label.trim_end_matches('-');
    format!(
        "# Handed to the GuestOS VM by HostOS (icos-agent guestos-config) from the node's config.ini.
         hostname = {label}{SUFFIX}{domain}
network = dhcp
"
    )
}

/// The size of the GuestOS VM's configuration disk: about the least a FAT32 filesystem takes.
pub const GUEST_CONFIG_DISK_SIZE: u64 = 40 << 20;
/// What the configuration disk's identifiers derive from: the same configuration gives the same
/// disk on every node.
const GUEST_CONFIG_DISK_PARENT: uuid::Uuid = uuid::Uuid::from_u128(0x6c0e_5a2f_8d3b_4e71_9a06_2f4b_8c1d_7e53);

/// The configuration disk HostOS attaches to its GuestOS VM (`icos-agent guestos-config`): a FAT
/// filesystem labelled CONFIG holding [`guest_config_ini`] of the node's `host_config` when it
/// exists, else nothing. Returns the disk and a description of it.
pub fn guest_config_disk(host_config: &Path) -> Result<(Vec<u8>, String), super::InstallError> {
    let work = tempfile::tempdir().map_err(PathIoError::with("create a directory in", &std::env::temp_dir()))?;
    let mut files = Vec::new();
    let mut what = "empty (no node configuration)".to_owned();
    if host_config.exists() {
        let guest_ini = guest_config_ini(&super::config::read_config(host_config)?);
        let path = work.path().join(CONFIG_INI);
        std::fs::write(&path, &guest_ini).map_err(PathIoError::with("write", &path))?;
        what = summary(&parse_config(&path, guest_ini.as_bytes())?);
        files.push((CONFIG_INI.to_owned(), path));
    }
    let disk = super::config_filesystem(&files, GUEST_CONFIG_DISK_SIZE, GUEST_CONFIG_DISK_PARENT)?;
    Ok((disk, what))
}

/// Sets the kernel's host name.
pub fn set_hostname(name: &str) -> std::io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call; the kernel
    // copies them.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::parse_config;
    use super::*;

    #[test]
    fn static_and_dhcp_configurations_become_networkd_units() {
        let config = parse_config(
            Path::new("config.ini"),
            b"hostname=n1\nnetwork=static\nipv4_address=10.0.2.15/24\nipv4_gateway=10.0.2.2\n\
              ipv6_address=2001:db8::15/64\nipv6_gateway=fe80::1\ndns_servers=10.0.2.3\n",
        )
        .unwrap();
        assert_eq!(
            network_unit(&config),
            "# Written at boot by icos-agent apply-config from config.ini.\n[Match]\nType=ether\n\n[Network]\n\
             Address=10.0.2.15/24\nGateway=10.0.2.2\nAddress=2001:db8::15/64\nGateway=fe80::1\nIPv6AcceptRA=no\nDNS=10.0.2.3\n"
        );
        assert_eq!(summary(&config), "hostname n1, network 10.0.2.15/24 via 10.0.2.2 and 2001:db8::15/64 via fe80::1");
        let dhcp = parse_config(Path::new("config.ini"), b"hostname=n2\n").unwrap();
        assert!(network_unit(&dhcp).ends_with("[Network]\nDHCP=yes\n"));
        let dir = tempfile::tempdir().unwrap();
        write_network_unit(&dhcp, &dir.path().join("network")).unwrap();
        assert!(std::fs::read_to_string(dir.path().join("network").join(NETWORK_UNIT)).unwrap().contains("DHCP=yes"));
    }

    #[test]
    fn the_guest_gets_the_hosts_name_with_a_suffix_and_dhcp() {
        let host = parse_config(
            Path::new("c"),
            b"hostname=node-7.example.org
network=static
ipv4_address=10.0.2.15/24
ipv4_gateway=10.0.2.2
",
        )
        .unwrap();
        let guest = parse_config(Path::new("g"), guest_config_ini(&host).as_bytes()).unwrap();
        assert_eq!(guest.hostname, "node-7-guestos.example.org");
        assert_eq!(guest.network, Network::Dhcp);
        let long = parse_config(Path::new("c"), format!("hostname={}-b\n", "a".repeat(60)).as_bytes()).unwrap();
        let guest = parse_config(Path::new("g"), guest_config_ini(&long).as_bytes()).unwrap();
        assert_eq!(guest.hostname, format!("{}-guestos", "a".repeat(55)));
    }

    #[test]
    fn the_guest_configuration_disk_carries_the_guests_configuration_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("config.ini");
        let disk = dir.path().join("guest.img");
        let (bytes, what) = guest_config_disk(&host).unwrap();
        assert_eq!(what, "empty (no node configuration)");
        std::fs::write(&disk, &bytes).unwrap();
        assert!(read_config_from_fat(&disk).unwrap().is_none());
        std::fs::write(
            &host,
            "hostname = node-3\nnetwork = static\nipv4_address = 10.0.2.15/24\nipv4_gateway = 10.0.2.2\n",
        )
        .unwrap();
        let (bytes, what) = guest_config_disk(&host).unwrap();
        assert_eq!(
            (bytes.len() as u64, what.as_str()),
            (GUEST_CONFIG_DISK_SIZE, "hostname node-3-guestos, network DHCP")
        );
        std::fs::write(&disk, &bytes).unwrap();
        assert_eq!(read_config_from_fat(&disk).unwrap().unwrap().hostname, "node-3-guestos");
        assert_eq!(guest_config_disk(&host).unwrap().0, bytes, "the same configuration gives the same disk");
    }

    #[test]
    fn configuration_disks_are_read_without_mounting() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("config.ini");
        std::fs::write(&ini, "hostname = guest-1\n").unwrap();
        let parent = uuid::Uuid::from_u128(7);
        let disk = dir.path().join("config.img");
        let files = [(CONFIG_INI.to_owned(), ini)];
        std::fs::write(&disk, super::super::config_filesystem(&files, 40 << 20, parent).unwrap()).unwrap();
        assert_eq!(read_config_from_fat(&disk).unwrap().unwrap().hostname, "guest-1");
        std::fs::write(&disk, super::super::config_filesystem(&[], 40 << 20, parent).unwrap()).unwrap();
        assert!(read_config_from_fat(&disk).unwrap().is_none());
        std::fs::write(&disk, b"not a filesystem").unwrap();
        assert!(read_config_from_fat(&disk).unwrap_err().to_string().starts_with("cannot read the FAT filesystem on"));
    }
}
