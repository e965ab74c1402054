//! `config.ini`: what a user sets on the SetupOS stick's `CONFIG` partition before installing.
//!
//! One `key = value` per line; blank lines and lines starting with `#` or `;` are comments. No
//! sections, no quotes: a value is the text after the first `=`, with the white space around it
//! removed. The keys are [`KEYS`]; an unknown key, a malformed value, a key given twice or a
//! missing required key is an error that names the file, the line and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Every key, with what it takes: the documentation of the format, and the list an unknown key's
/// error shows.
pub const KEYS: [(&str, &str); 10] = [
    ("hostname", "required: the node's host name, letters, digits and '-' in dot-separated labels"),
    ("network", "dhcp (the default) or static"),
    ("ipv4_address", "with network = static: ADDRESS/PREFIX, such as 192.168.1.10/24"),
    ("ipv4_gateway", "with ipv4_address: the IPv4 gateway, inside the address's subnet"),
    ("ipv6_address", "with network = static: ADDRESS/PREFIX, such as 2001:db8::10/64"),
    ("ipv6_gateway", "with ipv6_address: the IPv6 gateway, link-local or inside the address's prefix"),
    ("dns_servers", "comma-separated IPv4 or IPv6 addresses"),
    ("target_disk", "the disk to install on, such as /dev/nvme0n1; by default the largest disk but the stick"),
    ("reinstall", "true to install over a disk that already holds a HostOS; false by default"),
    ("after_install", "poweroff (the default) or reboot"),
];

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallConfig {
    pub hostname: String,
    pub network: Network,
    pub dns_servers: Vec<IpAddr>,
    pub target_disk: Option<PathBuf>,
    pub reinstall: bool,
    pub after_install: AfterInstall,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    Dhcp,
    /// At least one of the two.
    Static {
        ipv4: Option<StaticAddress<Ipv4Addr>>,
        ipv6: Option<StaticAddress<Ipv6Addr>>,
    },
}

/// An address with its prefix length, and the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticAddress<A> {
    pub address: A,
    pub prefix: u8,
    pub gateway: A,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterInstall {
    PowerOff,
    Reboot,
}

impl fmt::Display for AfterInstall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AfterInstall::PowerOff => "poweroff",
            AfterInstall::Reboot => "reboot",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}, line {line}: {problem}")]
    Line { path: PathBuf, line: usize, problem: String },
    #[error("{path}, line {line}: {key}: {problem}")]
    Key { path: PathBuf, line: usize, key: String, problem: String },
    #[error("{path}: {key} is required ({what})")]
    Missing { path: PathBuf, key: &'static str, what: &'static str },
}

/// Reads and validates `path`.
pub fn read_config(path: &Path) -> Result<InstallConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse_config(path, &bytes)
}

/// A value and the line it is on.
struct Value<'a> {
    text: &'a str,
    line: usize,
}

/// Validates the content `bytes` of `path`.
pub fn parse_config(path: &Path, bytes: &[u8]) -> Result<InstallConfig, ConfigError> {
    let line_error = |line: usize, problem: String| ConfigError::Line { path: path.to_owned(), line, problem };
    let text = std::str::from_utf8(bytes).map_err(|error| {
        let line = 1 + bytes[..error.valid_up_to()].iter().filter(|&&byte| byte == b'\n').count();
        line_error(line, "it is not UTF-8 text".into())
    })?;
    let mut values: BTreeMap<&str, Value> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            return Err(line_error(line, format!("{trimmed:?}: config.ini has no sections, only key = value lines")));
        }
        let (key, value) =
            trimmed.split_once('=').ok_or_else(|| line_error(line, format!("{trimmed:?} is not key = value")))?;
        let (key, value) = (key.trim(), value.trim());
        if !KEYS.iter().any(|(known, _)| *known == key) {
            let known: Vec<&str> = KEYS.iter().map(|(known, _)| *known).collect();
            return Err(ConfigError::Key {
                path: path.to_owned(),
                line,
                key: key.to_owned(),
                problem: format!("unknown key (the keys are {})", known.join(", ")),
            });
        }
        if value.is_empty() {
            return Err(key_error(path, line, key, "has no value".into()));
        }
        if let Some(first) = values.insert(key, Value { text: value, line }) {
            return Err(key_error(path, line, key, format!("given twice (first on line {})", first.line)));
        }
    }
    Config { path, values }.validate()
}

fn key_error(path: &Path, line: usize, key: &str, problem: String) -> ConfigError {
    ConfigError::Key { path: path.to_owned(), line, key: key.to_owned(), problem }
}

struct Config<'a> {
    path: &'a Path,
    values: BTreeMap<&'a str, Value<'a>>,
}

impl Config<'_> {
    fn error(&self, key: &str, problem: String) -> ConfigError {
        key_error(self.path, self.values[key].line, key, problem)
    }

    fn required(&self, key: &'static str) -> Result<&str, ConfigError> {
        match self.values.get(key) {
            Some(value) => Ok(value.text),
            None => {
                let what = KEYS.iter().find(|(known, _)| *known == key).map_or("", |(_, what)| *what);
                Err(ConfigError::Missing { path: self.path.to_owned(), key, what })
            }
        }
    }

    /// The value of `key` parsed by `parse`, whose error text says what is wrong with it.
    fn parsed<T>(&self, key: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
        self.values
            .get(key)
            .map(|value| parse(value.text).map_err(|problem| self.error(key, format!("{:?}: {problem}", value.text))))
            .transpose()
    }

    fn validate(self) -> Result<InstallConfig, ConfigError> {
        let hostname = self.required("hostname")?.to_owned();
        if let Err(problem) = check_hostname(&hostname) {
            return Err(self.error("hostname", format!("{hostname:?}: {problem}")));
        }
        let network = match self.parsed("network", |text| match text {
            "dhcp" => Ok(false),
            "static" => Ok(true),
            _ => Err("expected dhcp or static".into()),
        })? {
            Some(true) => self.static_network()?,
            _ => {
                if let Some(key) = ["ipv4_address", "ipv4_gateway", "ipv6_address", "ipv6_gateway"]
                    .into_iter()
                    .find(|key| self.values.contains_key(key))
                {
                    return Err(self.error(key, "network is dhcp: static addresses need network = static".into()));
                }
                Network::Dhcp
            }
        };
        let dns_servers = self
            .parsed("dns_servers", |text| {
                text.split(',')
                    .map(|server| {
                        server.trim().parse::<IpAddr>().map_err(|_| format!("{:?} is not an IP address", server.trim()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })?
            .unwrap_or_default();
        let target_disk = self.parsed("target_disk", |text| {
            if text.starts_with("/dev/") && !text.split('/').any(|part| part == "..") {
                Ok(PathBuf::from(text))
            } else {
                Err("expected a device path under /dev, such as /dev/sda".into())
            }
        })?;
        let reinstall = self.parsed("reinstall", parse_bool)?.unwrap_or(false);
        let after_install = self
            .parsed("after_install", |text| match text {
                "poweroff" => Ok(AfterInstall::PowerOff),
                "reboot" => Ok(AfterInstall::Reboot),
                _ => Err("expected poweroff or reboot".into()),
            })?
            .unwrap_or(AfterInstall::PowerOff);
        Ok(InstallConfig { hostname, network, dns_servers, target_disk, reinstall, after_install })
    }

    fn static_network(&self) -> Result<Network, ConfigError> {
        let ipv4 =
            self.static_address::<Ipv4Addr>("ipv4_address", "ipv4_gateway", 32, |address, prefix, gateway| {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(address) & mask == u32::from(gateway) & mask
            })?;
        let ipv6 =
            self.static_address::<Ipv6Addr>("ipv6_address", "ipv6_gateway", 128, |address, prefix, gateway| {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                let link_local = gateway.segments()[0] & 0xffc0 == 0xfe80;
                link_local || u128::from(address) & mask == u128::from(gateway) & mask
            })?;
        if ipv4.is_none() && ipv6.is_none() {
            return Err(self.error("network", "network = static needs ipv4_address or ipv6_address".into()));
        }
        Ok(Network::Static { ipv4, ipv6 })
    }

    /// The address `address_key` (ADDRESS/PREFIX) with its gateway `gateway_key`, which
    /// `reachable` must accept.
    fn static_address<A: std::str::FromStr + Copy + PartialEq + fmt::Display>(
        &self,
        address_key: &'static str,
        gateway_key: &'static str,
        max_prefix: u8,
        reachable: impl Fn(A, u8, A) -> bool,
    ) -> Result<Option<StaticAddress<A>>, ConfigError> {
        let address = self.parsed(address_key, |text| {
            let (address, prefix) = text.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
            let address = address.parse::<A>().map_err(|_| format!("{address:?} is not an address of this family"))?;
            let prefix = prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| (1..=max_prefix).contains(prefix))
                .ok_or(format!("the prefix length {prefix:?} is not a number from 1 to {max_prefix}"))?;
            Ok((address, prefix))
        })?;
        let gateway =
            self.parsed(gateway_key, |text| text.parse::<A>().map_err(|_| "not an address of this family".to_owned()))?;
        match (address, gateway) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(self.error(gateway_key, format!("a gateway without {address_key}"))),
            (Some(_), None) => Err(self.error(address_key, format!("{gateway_key} is missing"))),
            (Some((address, prefix)), Some(gateway)) => {
                if gateway == address {
                    return Err(self.error(gateway_key, format!("{gateway} is the node's own address")));
                }
                if !reachable(address, prefix, gateway) {
                    return Err(self.error(gateway_key, format!("{gateway} is outside {address}/{prefix}")));
                }
                Ok(Some(StaticAddress { address, prefix, gateway }))
            }
        }
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Why `name` is not a host name (RFC 1123), if it is not one.
fn check_hostname(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters");
        }
        if !label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') {
            return Err("only letters, digits and '-' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<InstallConfig, ConfigError> {
        parse_config(Path::new("/mnt/config/config.ini"), text.as_bytes())
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_static_configuration_with_both_families() {
        let config = parse(
            "# node 7\nhostname = node-7.example\nnetwork=static\n\n; v4\nipv4_address = 10.0.2.15/24\n\
             ipv4_gateway = 10.0.2.2\nipv6_address = 2001:db8::15/64\nipv6_gateway = fe80::1\n\
             dns_servers = 10.0.2.3, 2001:db8::53\ntarget_disk = /dev/vdb\nreinstall = true\nafter_install = reboot\n",
        )
        .unwrap();
        assert_eq!(config.hostname, "node-7.example");
        let Network::Static { ipv4: Some(ipv4), ipv6: Some(ipv6) } = config.network else { panic!("{config:?}") };
        assert_eq!(
            (ipv4.address, ipv4.prefix, ipv4.gateway),
            (Ipv4Addr::new(10, 0, 2, 15), 24, Ipv4Addr::new(10, 0, 2, 2))
        );
        assert_eq!(ipv6.prefix, 64);
        assert_eq!(config.dns_servers.len(), 2);
        assert_eq!(config.target_disk, Some(PathBuf::from("/dev/vdb")));
        assert!(config.reinstall);
        assert_eq!(config.after_install, AfterInstall::Reboot);
    }

    #[test]
    fn the_defaults_are_dhcp_poweroff_and_no_reinstall() {
        let config = parse("hostname=n1\n").unwrap();
        assert_eq!(config.network, Network::Dhcp);
        assert_eq!((config.reinstall, config.after_install, config.target_disk), (false, AfterInstall::PowerOff, None));
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        for (text, expected) in [
            ("hostname=a\ncolour=blue\n", "config.ini, line 2: colour: unknown key (the keys are hostname, network,"),
            (
                "hostname=a\nnetwork=static\nipv4_address=10.0.2.300/24\nipv4_gateway=10.0.2.2\n",
                "line 3: ipv4_address: \"10.0.2.300/24\": \"10.0.2.300\" is not an address",
            ),
            (
                "hostname=a\nnetwork=static\nipv4_address=10.0.2.15/33\nipv4_gateway=10.0.2.2\n",
                "line 3: ipv4_address: \"10.0.2.15/33\": the prefix length \"33\" is not a number from 1 to 32",
            ),
            (
                "hostname=a\nnetwork=static\nipv4_address=10.0.2.15\n",
                "line 3: ipv4_address: \"10.0.2.15\": expected ADDRESS/PREFIX",
            ),
            (
                "hostname=a\nnetwork=static\nipv4_address=10.0.2.15/24\nipv4_gateway=10.0.3.1\n",
                "line 4: ipv4_gateway: 10.0.3.1 is outside 10.0.2.15/24",
            ),
            (
                "hostname=a\nnetwork=static\nipv4_address=10.0.2.15/24\n",
                "line 3: ipv4_address: ipv4_gateway is missing",
            ),
            ("hostname=a\nnetwork=static\n", "line 2: network: network = static needs ipv4_address or ipv6_address"),
            ("hostname=a\nipv4_address=10.0.2.15/24\n", "line 2: ipv4_address: network is dhcp"),
            (
                "hostname=a\nnetwork=static\nipv6_address=2001:db8::1/64\nipv6_gateway=2001:db9::1\n",
                "line 4: ipv6_gateway: 2001:db9::1 is outside 2001:db8::1/64",
            ),
            ("hostname=-a\n", "line 1: hostname: \"-a\": a label cannot start or end with '-'"),
            ("hostname=a_b\n", "line 1: hostname: \"a_b\": only letters"),
            ("network=dhcp\n", "config.ini: hostname is required (required: the node's host name"),
            ("hostname=a\nhostname=b\n", "line 2: hostname: given twice (first on line 1)"),
            ("hostname=\n", "line 1: hostname: has no value"),
            ("[node]\nhostname=a\n", "line 1: \"[node]\": config.ini has no sections"),
            ("hostname a\n", "line 1: \"hostname a\" is not key = value"),
            ("hostname=a\nreinstall=yes\n", "line 2: reinstall: \"yes\": expected true or false"),
            ("hostname=a\ndns_servers=10.0.2.3,,\n", "line 2: dns_servers: \"10.0.2.3,,\": \"\" is not an IP address"),
            (
                "hostname=a\ntarget_disk=/dev/../etc/passwd\n",
                "line 2: target_disk: \"/dev/../etc/passwd\": expected a device path",
            ),
            ("hostname=a\nafter_install=halt\n", "line 2: after_install: \"halt\": expected poweroff or reboot"),
        ] {
            let message = error(text);
            assert!(message.contains(expected), "{text:?}:\n  {message}\n  expected {expected}");
        }
        let bytes = b"hostname=a\n\xff=1\n";
        let message = parse_config(Path::new("c.ini"), bytes).unwrap_err().to_string();
        assert_eq!(message, "c.ini, line 2: it is not UTF-8 text");
    }
}
