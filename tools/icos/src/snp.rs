//! AMD SEV-SNP launch digests of QEMU guests booted directly (kernel, initrd and command line given
//! to QEMU with `kernel-hashes=on`) from an AmdSev OVMF: the SHA-384 measurement that the
//! firmware puts in the guest's attestation report, computed as virtee's `sev-snp-measure`
//! computes it (`--mode snp --vmm-type QEMU`).
//!
//! The digest folds in, page by page (`PAGE_INFO` of the SNP ABI): every page of the OVMF image,
//! mapped to end at 4 GiB; the sections OVMF's SEV metadata lists (zero, secrets and CPUID pages,
//! and the page holding the SEV hashes table of kernel, initrd and command line); then one VMSA
//! (the initial register state) per vCPU. The command line is hashed exactly as QEMU passes it,
//! with its terminating NUL and nothing trimmed (the `sev` crate trims it, QEMU does not).
//!
//! `tests/build_root/snp.rs` compares digests with `sev-snp-measure` run on Debian's
//! `OVMF.amdsev.fd`; the facts are gathered in `../shared/notes/verity-and-snp.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256, Sha384};
use uuid::{uuid, Uuid};

use crate::io_error::PathIoError;
use crate::sha256sums::{sha256_file_digest, Sha256SumsError};

/// A launch digest (SHA-384).
pub type LaunchDigest = [u8; 48];

const PAGE_SIZE: usize = 4096;
const FOUR_GIB: u64 = 1 << 32;
/// Where the VMSA pages are measured: -1, page-aligned, bits above 51 cleared.
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

const FOOTER_GUID: Uuid = uuid!("96b582de-1fb2-45f7-baea-a366c55a082d");
const SEV_ES_RESET_BLOCK_GUID: Uuid = uuid!("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
const SEV_HASH_TABLE_GUID: Uuid = uuid!("7255371f-3a3b-4b04-927b-1da6efa8d454");
const SEV_METADATA_GUID: Uuid = uuid!("dc886566-984a-4798-a75e-5585a7bf67cc");
/// An OVMF footer table entry's header: u16 size, then the GUID.
const ENTRY_HEADER_SIZE: usize = 18;

const HASH_TABLE_HEADER_GUID: Uuid = uuid!("9438d606-4f22-4cc9-b479-a793d411fd21");
const HASH_TABLE_CMDLINE_GUID: Uuid = uuid!("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");
const HASH_TABLE_INITRD_GUID: Uuid = uuid!("44baf731-3a2f-4bd7-9af1-41e29169781d");
const HASH_TABLE_KERNEL_GUID: Uuid = uuid!("4de79437-abd2-427f-b835-d5b172d2045b");
/// The hashes table: a header entry and three entries of GUID, u16 length and SHA-256.
const HASH_TABLE_SIZE: usize = ENTRY_HEADER_SIZE + 3 * (ENTRY_HEADER_SIZE + 32);
/// QEMU pads the table to a multiple of 16 bytes.
const PADDED_HASH_TABLE_SIZE: usize = HASH_TABLE_SIZE.next_multiple_of(16);

/// The page types of `PAGE_INFO`.
#[derive(Debug, Clone, Copy)]
enum PageType {
    Normal = 1,
    Vmsa = 2,
    Zero = 3,
    Secrets = 5,
    Cpuid = 6,
}

/// The kinds of OVMF SEV metadata sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionType {
    SnpSecMem = 1,
    SnpSecrets = 2,
    Cpuid = 3,
    SvsmCaa = 4,
    SnpKernelHashes = 0x10,
}

/// One section of OVMF's SEV metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub gpa: u32,
    pub size: u32,
    pub kind: SectionType,
}

#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Hash(#[from] Sha256SumsError),
    #[error("{path} is not an OVMF image for SEV-SNP: {problem}")]
    Ovmf { path: PathBuf, problem: String },
    #[error(
        "{path} has no SNP_KERNEL_HASHES section, so a kernel, initrd and command line cannot be measured with it \
         (an AmdSev build of OVMF, such as Debian's OVMF.amdsev.fd, has one)"
    )]
    NoKernelHashes { path: PathBuf },
    #[error("the kernel command line holds a NUL byte at {0}: QEMU would pass only what comes before it")]
    NulInCommandLine(usize),
    #[error("{0:?} is not a vCPU type sev-snp-measure knows (EPYC, EPYC-v1 .. EPYC-v4, EPYC-IBPB, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin and their -vN)")]
    UnknownVcpuType(String),
    #[error("a guest needs at least one vCPU")]
    NoVcpus,
}

/// An OVMF image and what its footer table and SEV metadata say.
#[derive(Debug, Clone)]
pub struct Ovmf {
    data: Vec<u8>,
    table: HashMap<Uuid, Vec<u8>>,
    sections: Vec<Section>,
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(offset..offset + 4)?.try_into().ok()?))
}

impl Ovmf {
    /// Reads and parses an OVMF image.
    pub fn read(path: &Path) -> Result<Self, SnpError> {
        let data = std::fs::read(path).map_err(PathIoError::with("read", path))?;
        Self::parse(data).map_err(|problem| SnpError::Ovmf { path: path.to_owned(), problem })
    }

    fn parse(data: Vec<u8>) -> Result<Self, String> {
        if data.is_empty() || data.len() % PAGE_SIZE != 0 || data.len() as u64 > FOUR_GIB {
            return Err(format!("its size {} is not a whole number of 4 KiB pages below 4 GiB", data.len()));
        }
        let table = Self::footer_table(&data)?;
        let mut ovmf = Ovmf { data, table, sections: Vec::new() };
        ovmf.sections = ovmf.metadata_sections()?;
        Ok(ovmf)
    }

    /// The GUIDed entries of the table that ends 32 bytes before the end of the image, walked
    /// backwards from its footer entry.
    fn footer_table(data: &[u8]) -> Result<HashMap<Uuid, Vec<u8>>, String> {
        let footer_start = data.len() - 32 - ENTRY_HEADER_SIZE;
        let entry_at = |start: usize| -> (usize, Uuid) {
            let size = u16::from_le_bytes([data[start], data[start + 1]]) as usize;
            let guid_bytes: [u8; 16] = data[start + 2..start + 18].try_into().expect("16 bytes");
            (size, Uuid::from_bytes_le(guid_bytes))
        };
        let (footer_size, footer_guid) = entry_at(footer_start);
        if footer_guid != FOOTER_GUID {
            return Err("no OVMF footer table 32 bytes before its end".to_owned());
        }
        let table_size = footer_size
            .checked_sub(ENTRY_HEADER_SIZE)
            .filter(|&size| size <= footer_start)
            .ok_or_else(|| format!("its footer table claims {footer_size} bytes"))?;
        let table_start = footer_start - table_size;
        let mut end = footer_start;
        let mut table = HashMap::new();
        while end - table_start >= ENTRY_HEADER_SIZE {
            let (size, guid) = entry_at(end - ENTRY_HEADER_SIZE);
            if size < ENTRY_HEADER_SIZE || size > end - table_start {
                return Err(format!("the footer table entry {guid} claims {size} bytes"));
            }
            table.insert(guid, data[end - size..end - ENTRY_HEADER_SIZE].to_vec());
            end -= size;
        }
        Ok(table)
    }

    fn table_u32(&self, guid: Uuid, what: &str) -> Result<u32, String> {
        self.table
            .get(&guid)
            .and_then(|entry| u32_at(entry, 0))
            .ok_or_else(|| format!("its footer table has no {what}"))
    }

    /// The sections of the "ASEV" metadata that the footer table points to.
    fn metadata_sections(&self) -> Result<Vec<Section>, String> {
        let offset_from_end = self.table_u32(SEV_METADATA_GUID, "SEV metadata")? as usize;
        let start = self
            .data
            .len()
            .checked_sub(offset_from_end)
            .ok_or_else(|| format!("its SEV metadata offset {offset_from_end} lies before its start"))?;
        let header = self.data.get(start..start + 16).ok_or("its SEV metadata header lies beyond its end")?;
        if &header[..4] != b"ASEV" || u32_at(header, 8) != Some(1) {
            return Err("its SEV metadata header is not \"ASEV\" version 1".to_owned());
        }
        let count = u32_at(header, 12).expect("16 bytes") as usize;
        let mut sections = Vec::with_capacity(count);
        for index in 0..count {
            let item = self
                .data
                .get(start + 16 + index * 12..start + 28 + index * 12)
                .ok_or("its SEV metadata sections run beyond its end")?;
            let kind = match u32_at(item, 8).expect("12 bytes") {
                1 => SectionType::SnpSecMem,
                2 => SectionType::SnpSecrets,
                3 => SectionType::Cpuid,
                4 => SectionType::SvsmCaa,
                0x10 => SectionType::SnpKernelHashes,
                other => return Err(format!("its SEV metadata has a section of unknown type {other:#x}")),
            };
            sections.push(Section {
                gpa: u32_at(item, 0).expect("12 bytes"),
                size: u32_at(item, 4).expect("12 bytes"),
                kind,
            });
        }
        Ok(sections)
    }

    /// Where the image starts in guest memory: it ends at 4 GiB.
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }

    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The instruction pointer the application processors start at (SEV-ES reset block).
    pub fn sev_es_reset_eip(&self) -> Result<u32, String> {
        self.table_u32(SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")
    }

    /// Where QEMU puts the SEV hashes table.
    pub fn sev_hashes_table_gpa(&self) -> Result<u32, String> {
        self.table_u32(SEV_HASH_TABLE_GUID, "SEV hashes table address")
    }

    /// The launch digest after the OVMF pages alone (`sev-snp-measure --mode snp:ovmf-hash`).
    pub fn hash(&self) -> LaunchDigest {
        let mut digest = LaunchDigestBuilder::new([0; 48]);
        digest.normal_pages(self.gpa(), &self.data);
        digest.value
    }
}

/// The SHA-256 hashes of the kernel, initrd and command line that QEMU writes into the guest
/// (the SEV hashes table) and OVMF checks before it starts the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelHashes {
    pub kernel: [u8; 32],
    pub initrd: [u8; 32],
    pub cmdline: [u8; 32],
}

impl KernelHashes {
    /// The hashes of the kernel file, the initrd file (none: the hash of nothing) and the
    /// command line, hashed with its NUL as QEMU passes it.
    pub fn new(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<Self, SnpError> {
        let initrd = match initrd {
            Some(path) => sha256_file_digest(path)?,
            None => Sha256::digest([]).into(),
        };
        Self::from_digests(sha256_file_digest(kernel)?, initrd, cmdline)
    }

    /// The hashes, given the SHA-256 of the kernel and of the initrd (computed as they were
    /// written, say) and the command line.
    pub fn from_digests(kernel: [u8; 32], initrd: [u8; 32], cmdline: &str) -> Result<Self, SnpError> {
        if let Some(position) = cmdline.bytes().position(|byte| byte == 0) {
            return Err(SnpError::NulInCommandLine(position));
        }
        let mut with_nul = cmdline.as_bytes().to_vec();
        with_nul.push(0);
        Ok(KernelHashes { kernel, initrd, cmdline: Sha256::digest(&with_nul).into() })
    }

    /// The page QEMU measures: the padded table at `offset`, zeros elsewhere.
    pub fn page(&self, offset: usize) -> [u8; PAGE_SIZE] {
        let mut table = Vec::with_capacity(PADDED_HASH_TABLE_SIZE);
        table.extend_from_slice(&HASH_TABLE_HEADER_GUID.to_bytes_le());
        table.extend_from_slice(&(HASH_TABLE_SIZE as u16).to_le_bytes());
        for (guid, hash) in [
            (HASH_TABLE_CMDLINE_GUID, &self.cmdline),
            (HASH_TABLE_INITRD_GUID, &self.initrd),
            (HASH_TABLE_KERNEL_GUID, &self.kernel),
        ] {
            table.extend_from_slice(&guid.to_bytes_le());
            table.extend_from_slice(&((ENTRY_HEADER_SIZE + 32) as u16).to_le_bytes());
            table.extend_from_slice(hash);
        }
        table.resize(PADDED_HASH_TABLE_SIZE, 0);
        let mut page = [0u8; PAGE_SIZE];
        page[offset..offset + table.len()].copy_from_slice(&table);
        page
    }
}

/// Parses guest features (SEV_FEATURES) as sev-snp-measure takes them: decimal, or hex with 0x.
pub fn parse_guest_features(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a number (decimal, or hex with 0x)"))
}

/// A QEMU vCPU model, by the CPUID signature it reports (the VMSA's initial RDX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuType {
    pub name: &'static str,
    pub signature: u32,
}

/// `(family_high << 20) | (model_high << 16) | (family_low << 8) | (model_low << 4) | stepping`,
/// with family_low = min(family, 15) and family_high the rest, as sev-snp-measure computes it.
const fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf { (0xf, (family - 0xf) & 0xff) } else { (family, 0) };
    (family_high << 20) | (((model >> 4) & 0xf) << 16) | (family_low << 8) | ((model & 0xf) << 4) | (stepping & 0xf)
}

const VCPU_TYPES: &[(&str, u32)] = &[
    ("EPYC", cpu_signature(23, 1, 2)),
    ("EPYC-v1", cpu_signature(23, 1, 2)),
    ("EPYC-v2", cpu_signature(23, 1, 2)),
    ("EPYC-IBPB", cpu_signature(23, 1, 2)),
    ("EPYC-v3", cpu_signature(23, 1, 2)),
    ("EPYC-v4", cpu_signature(23, 1, 2)),
    ("EPYC-Rome", cpu_signature(23, 49, 0)),
    ("EPYC-Rome-v1", cpu_signature(23, 49, 0)),
    ("EPYC-Rome-v2", cpu_signature(23, 49, 0)),
    ("EPYC-Rome-v3", cpu_signature(23, 49, 0)),
    ("EPYC-Milan", cpu_signature(25, 1, 1)),
    ("EPYC-Milan-v1", cpu_signature(25, 1, 1)),
    ("EPYC-Milan-v2", cpu_signature(25, 1, 1)),
    ("EPYC-Genoa", cpu_signature(25, 17, 0)),
    ("EPYC-Genoa-v1", cpu_signature(25, 17, 0)),
    ("EPYC-Turin", cpu_signature(26, 0, 0)),
];

impl FromStr for VcpuType {
    type Err = SnpError;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        VCPU_TYPES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(name, signature)| VcpuType { name, signature })
            .ok_or_else(|| SnpError::UnknownVcpuType(name.to_owned()))
    }
}

/// The initial VMSA (save area) page QEMU gives a vCPU starting at `eip`.
pub fn vmsa_page(eip: u32, vcpu_signature: u32, guest_features: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    let mut put = |offset: usize, bytes: &[u8]| page[offset..offset + bytes.len()].copy_from_slice(bytes);
    // Segment registers: selector u16, attributes u16, limit u32, base u64.
    let segments: [(usize, u16, u16, u64); 10] = [
        (0x00, 0, 0x93, 0),                                 // es
        (0x10, 0xf000, 0x9b, u64::from(eip & 0xffff_0000)), // cs
        (0x20, 0, 0x93, 0),                                 // ss
        (0x30, 0, 0x93, 0),                                 // ds
        (0x40, 0, 0x93, 0),                                 // fs
        (0x50, 0, 0x93, 0),                                 // gs
        (0x60, 0, 0, 0),                                    // gdtr
        (0x70, 0, 0x82, 0),                                 // ldtr
        (0x80, 0, 0, 0),                                    // idtr
        (0x90, 0, 0x8b, 0),                                 // tr
    ];
    for (offset, selector, attributes, base) in segments {
        put(offset, &selector.to_le_bytes());
        put(offset + 2, &attributes.to_le_bytes());
        put(offset + 4, &0xffffu32.to_le_bytes());
        put(offset + 8, &base.to_le_bytes());
    }
    put(0xd0, &0x1000u64.to_le_bytes()); // efer: SVME, as KVM sets it
    put(0x148, &0x40u64.to_le_bytes()); // cr4: MCE, as KVM sets it
    put(0x158, &0x10u64.to_le_bytes()); // cr0
    put(0x160, &0x400u64.to_le_bytes()); // dr7
    put(0x168, &0xffff_0ff0u64.to_le_bytes()); // dr6
    put(0x170, &0x2u64.to_le_bytes()); // rflags
    put(0x178, &u64::from(eip & 0xffff).to_le_bytes()); // rip
    put(0x268, &0x0007_0406_0007_0406u64.to_le_bytes()); // g_pat
    put(0x310, &u64::from(vcpu_signature).to_le_bytes()); // rdx
    put(0x3b0, &guest_features.to_le_bytes()); // sev_features
    put(0x3e8, &0x1u64.to_le_bytes()); // xcr0
    put(0x408, &0x1f80u32.to_le_bytes()); // mxcsr
    put(0x410, &0x37fu16.to_le_bytes()); // x87_fcw
    page
}

/// The launch digest as the pages go in.
struct LaunchDigestBuilder {
    value: LaunchDigest,
}

impl LaunchDigestBuilder {
    fn new(seed: LaunchDigest) -> Self {
        LaunchDigestBuilder { value: seed }
    }

    /// `LD = SHA-384(LD || contents || u16 0x70 || page type || is_imi, vmpl3..1 perms, 0 || gpa)`.
    fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; 48]) {
        let mut page_info = [0u8; 0x70];
        page_info[..48].copy_from_slice(&self.value);
        page_info[48..96].copy_from_slice(contents);
        page_info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        page_info[98] = page_type as u8;
        page_info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.value = Sha384::digest(page_info).into();
    }

    fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        for (index, page) in data.chunks(PAGE_SIZE).enumerate() {
            self.update(PageType::Normal, gpa + (index * PAGE_SIZE) as u64, &Sha384::digest(page).into());
        }
    }

    fn zero_pages(&mut self, gpa: u64, size: u32) {
        for offset in (0..u64::from(size)).step_by(PAGE_SIZE) {
            self.update(PageType::Zero, gpa + offset, &[0; 48]);
        }
    }
}

/// What a guest is launched with, besides its firmware.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub vcpus: u32,
    pub vcpu_type: VcpuType,
    /// SEV_FEATURES of the VMSAs (bit 0 SNPActive; 0x21 adds DebugSwap, Linux 6.6+ hosts).
    pub guest_features: u64,
    /// The kernel, initrd and command line of a direct boot; `None`: OVMF boots from disk.
    pub kernel: Option<&'a KernelHashes>,
}

/// The launch digest of a QEMU SEV-SNP guest.
pub fn launch_digest(ovmf: &Ovmf, ovmf_path: &Path, launch: &Launch) -> Result<LaunchDigest, SnpError> {
    if launch.vcpus == 0 {
        return Err(SnpError::NoVcpus);
    }
    let ovmf_error = |problem| SnpError::Ovmf { path: ovmf_path.to_owned(), problem };
    let mut digest = LaunchDigestBuilder::new(ovmf.hash());
    for section in ovmf.sections() {
        let gpa = u64::from(section.gpa);
        match section.kind {
            SectionType::SnpSecMem | SectionType::SvsmCaa => digest.zero_pages(gpa, section.size),
            SectionType::SnpSecrets => digest.update(PageType::Secrets, gpa, &[0; 48]),
            SectionType::Cpuid => digest.update(PageType::Cpuid, gpa, &[0; 48]),
            SectionType::SnpKernelHashes => match launch.kernel {
                Some(hashes) => {
                    if section.size as usize != PAGE_SIZE {
                        return Err(ovmf_error(format!(
                            "its SNP_KERNEL_HASHES section is {} bytes, not one page",
                            section.size
                        )));
                    }
                    let offset = (ovmf.sev_hashes_table_gpa().map_err(ovmf_error)? & 0xfff) as usize;
                    if offset + PADDED_HASH_TABLE_SIZE > PAGE_SIZE {
                        return Err(ovmf_error(format!("its SEV hashes table at page offset {offset} crosses a page")));
                    }
                    digest.normal_pages(gpa, &hashes.page(offset));
                }
                None => digest.zero_pages(gpa, section.size),
            },
        }
    }
    if launch.kernel.is_some() && !ovmf.sections().iter().any(|section| section.kind == SectionType::SnpKernelHashes) {
        return Err(SnpError::NoKernelHashes { path: ovmf_path.to_owned() });
    }
    let bsp = vmsa_page(0xffff_fff0, launch.vcpu_type.signature, launch.guest_features);
    let ap = vmsa_page(ovmf.sev_es_reset_eip().map_err(ovmf_error)?, launch.vcpu_type.signature, launch.guest_features);
    for vcpu in 0..launch.vcpus {
        let page = if vcpu == 0 { &bsp } else { &ap };
        digest.update(PageType::Vmsa, VMSA_GPA, &Sha384::digest(page).into());
    }
    Ok(digest.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::hex;

    #[test]
    fn vcpu_signatures_are_sev_snp_measures() {
        let signature = |name: &str| name.parse::<VcpuType>().unwrap().signature;
        assert_eq!(signature("EPYC-v4"), 0x800f12);
        assert_eq!(signature("EPYC-Rome"), 0x830f10);
        assert_eq!(signature("EPYC-Milan-v2"), 0xa00f11);
        assert_eq!(signature("EPYC-Genoa"), 0xa10f10);
        assert_eq!(signature("EPYC-Turin"), 0xb00f00);
        assert!("Skylake".parse::<VcpuType>().is_err());
    }

    /// The table of the shared note (verified with sev-snp-measure): kernel and initrd
    /// /dev/null, command line "console=ttyS0 loglevel=7".
    #[test]
    fn hashes_table_matches_the_note() {
        let hashes =
            KernelHashes::new(Path::new("/dev/null"), Some(Path::new("/dev/null")), "console=ttyS0 loglevel=7")
                .unwrap();
        let page = hashes.page(0xc00);
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let expected = format!(
            "06d63894224fc94cb479a793d411fd21a800d82dd09720bd944caa78e7714d36ab2a3200\
             321c8eec6a77bad179511397f913a083067ad8cb737bb260aacbfe8df70fc50a\
             31f7ba442f3ad74b9af141e29169781d3200{empty}3794e74dd2ab7f42b835d5b172d2045b3200{empty}0000000000000000"
        );
        assert_eq!(hex(&page[0xc00..0xc00 + PADDED_HASH_TABLE_SIZE]), expected);
        assert!(page[..0xc00].iter().chain(&page[0xc00 + PADDED_HASH_TABLE_SIZE..]).all(|&byte| byte == 0));
    }

    #[test]
    fn command_lines_are_hashed_verbatim_with_their_nul() {
        let hashes = |cmdline: &str| KernelHashes::new(Path::new("/dev/null"), None, cmdline).unwrap().cmdline;
        assert_eq!(hashes(""), <[u8; 32]>::from(Sha256::digest([0])));
        assert_ne!(hashes("console=ttyS0"), hashes("console=ttyS0 "));
        assert!(matches!(KernelHashes::new(Path::new("/dev/null"), None, "a\0b"), Err(SnpError::NulInCommandLine(1))));
    }

    /// VMSA digests of the shared note: sev-snp-measure's fixture (AP reset EIP 0x80b004), EPYC-v4
    /// (0x800f12), features 0x1.
    #[test]
    fn vmsa_pages_match_the_note() {
        let bsp = hex(&Sha384::digest(vmsa_page(0xffff_fff0, 0x800f12, 1)));
        assert!(bsp.starts_with("77920c4c") && bsp.ends_with("d51c553a"), "{bsp}");
        let ap = hex(&Sha384::digest(vmsa_page(0x80b004, 0x800f12, 1)));
        assert!(ap.starts_with("8413b852") && ap.ends_with("385bf7b4"), "{ap}");
    }

    /// A minimal OVMF image: one page whose last bytes hold a footer table with the metadata,
    /// reset block and hashes table entries, and the "ASEV" metadata in the middle.
    fn synthetic_ovmf(sections: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut data = vec![0u8; PAGE_SIZE];
        let metadata_start = 0x400;
        data[metadata_start..metadata_start + 4].copy_from_slice(b"ASEV");
        data[metadata_start + 4..metadata_start + 8].copy_from_slice(&(16 + 12 * sections.len() as u32).to_le_bytes());
        data[metadata_start + 8..metadata_start + 12].copy_from_slice(&1u32.to_le_bytes());
        data[metadata_start + 12..metadata_start + 16].copy_from_slice(&(sections.len() as u32).to_le_bytes());
        for (index, (gpa, size, kind)) in sections.iter().enumerate() {
            let item = metadata_start + 16 + index * 12;
            data[item..item + 4].copy_from_slice(&gpa.to_le_bytes());
            data[item + 4..item + 8].copy_from_slice(&size.to_le_bytes());
            data[item + 8..item + 12].copy_from_slice(&kind.to_le_bytes());
        }
        let entry = |guid: Uuid, value: u32| {
            let mut bytes = value.to_le_bytes().to_vec();
            bytes.extend_from_slice(&22u16.to_le_bytes());
            bytes.extend_from_slice(&guid.to_bytes_le());
            bytes
        };
        let mut table = entry(SEV_METADATA_GUID, (PAGE_SIZE - metadata_start) as u32);
        table.extend(entry(SEV_ES_RESET_BLOCK_GUID, 0x80b004));
        table.extend(entry(SEV_HASH_TABLE_GUID, 0x810c00));
        table.extend_from_slice(&((table.len() + ENTRY_HEADER_SIZE) as u16).to_le_bytes());
        table.extend_from_slice(&FOOTER_GUID.to_bytes_le());
        let end = PAGE_SIZE - 32;
        data[end - table.len()..end].copy_from_slice(&table);
        data
    }

    #[test]
    fn synthetic_ovmf_parses_and_kernel_hashes_need_their_section() {
        let ovmf = Ovmf::parse(synthetic_ovmf(&[(0x800000, 0x9000, 1), (0x80d000, 0x1000, 2), (0x80e000, 0x1000, 3)]))
            .unwrap();
        assert_eq!(ovmf.gpa(), 0xffff_f000);
        assert_eq!(ovmf.sev_es_reset_eip().unwrap(), 0x80b004);
        assert_eq!(ovmf.sections().len(), 3);
        let hashes = KernelHashes::new(Path::new("/dev/null"), None, "").unwrap();
        let launch =
            Launch { vcpus: 1, vcpu_type: "EPYC-v4".parse().unwrap(), guest_features: 1, kernel: Some(&hashes) };
        assert!(matches!(launch_digest(&ovmf, Path::new("ovmf"), &launch), Err(SnpError::NoKernelHashes { .. })));
        let no_kernel = Launch { kernel: None, ..launch.clone() };
        let one = launch_digest(&ovmf, Path::new("ovmf"), &no_kernel).unwrap();
        let two = launch_digest(&ovmf, Path::new("ovmf"), &Launch { vcpus: 2, ..no_kernel.clone() }).unwrap();
        assert_ne!(one, two);

        let with_hashes = Ovmf::parse(synthetic_ovmf(&[(0x800000, 0x9000, 1), (0x810000, 0x1000, 0x10)])).unwrap();
        let with_kernel = launch_digest(&with_hashes, Path::new("ovmf"), &launch).unwrap();
        let without = launch_digest(&with_hashes, Path::new("ovmf"), &no_kernel).unwrap();
        assert_ne!(with_kernel, without);
    }

    #[test]
    fn damaged_ovmf_images_are_refused() {
        assert!(Ovmf::parse(vec![0; 100]).unwrap_err().contains("4 KiB pages"));
        assert!(Ovmf::parse(vec![0; PAGE_SIZE]).unwrap_err().contains("footer table"));
        let mut data = synthetic_ovmf(&[(0x800000, 0x9000, 7)]);
        assert!(Ovmf::parse(data.clone()).unwrap_err().contains("unknown type 0x7"));
        data[0x400] = b'X';
        assert!(Ovmf::parse(data).unwrap_err().contains("ASEV"));
    }
}
