//! The canonical tar: every entry in byte order of its path (`./` first, then `./<path>`),
//! numeric owners only, mtimes clamped, hard links pointing at the first path of their inode.
//!
//! Header scheme, one for every entry: a POSIX ustar header whose name, link name, size and ids
//! fit its fields is written alone; when something does not fit, or the entry has xattrs, a PAX
//! extended header named `././@PaxHeader` (mode 0644, owner 0, time 0) comes first, holding only
//! `hdrcharset`, `path`, `linkpath`, `size`, `uid`, `gid` and `SCHILY.xattr.*` records, in that
//! order with xattrs by name. No record carries a time, a user or group name, or a host detail.

use std::collections::HashMap;
use std::io::Write;

use super::path::display;
use super::store::Store;
use super::tree::{Inode, Kind, Tree};
use super::{RootfsError, View};

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
const PAX_NAME: &[u8] = b"././@PaxHeader";

/// One entry of a tree as it is written: its path inside the tree ("" for the root), its inode,
/// the first path of the same inode when this one is a hard link to it, and its clamped mtime.
pub(crate) struct Emitted<'a> {
    pub path: &'a [u8],
    pub inode: &'a Inode,
    pub link: Option<&'a [u8]>,
    pub mtime: u64,
}

/// Visits the root and then every entry of `view` in order. The first path of an inode carries
/// it; later paths of the same inode are hard links to that first one, so the target always
/// precedes the link whatever order the input had.
pub(crate) fn walk<'a, E>(
    tree: &'a Tree,
    view: &View<'a>,
    epoch: Option<u64>,
    mut visit: impl FnMut(&Emitted<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let clamp = |mtime: u64| epoch.map_or(mtime, |epoch| mtime.min(epoch));
    let root = tree.inode(view.root);
    visit(&Emitted { path: b"", inode: root, link: None, mtime: clamp(root.meta.mtime) })?;
    let mut first: HashMap<usize, &'a [u8]> = HashMap::new();
    for &(path, id) in &view.entries {
        let inode = tree.inode(id);
        let link = if inode.is_dir() { None } else { first.get(&id).copied() };
        if link.is_none() {
            first.insert(id, path);
        }
        visit(&Emitted { path, inode, link, mtime: clamp(inode.meta.mtime) })?;
    }
    Ok(())
}

/// The tar member name of a tree path.
pub(crate) fn tar_name(path: &[u8]) -> Vec<u8> {
    let mut name = b"./".to_vec();
    name.extend_from_slice(path);
    name
}

/// Writes the canonical tar of `view` to `out`.
pub(crate) struct TarWriter<'a> {
    pub out: &'a mut dyn Write,
    pub store: &'a Store,
}

impl TarWriter<'_> {
    pub fn entry(&mut self, entry: &Emitted<'_>) -> Result<(), RootfsError> {
        let meta = &entry.inode.meta;
        let name = tar_name(entry.path);
        let link_name;
        let (typeflag, size, link, device): (u8, u64, &[u8], (u32, u32)) = match (&entry.inode.kind, entry.link) {
            (Kind::Directory, _) => (b'5', 0, b"", (0, 0)),
            (_, Some(first)) => {
                link_name = tar_name(first);
                (b'1', 0, &link_name, (0, 0))
            }
            (Kind::File(content), None) => (b'0', content.size, b"", (0, 0)),
            (Kind::Symlink(target), None) => (b'2', 0, target, (0, 0)),
            (Kind::CharDevice { major, minor }, None) => (b'3', 0, b"", (*major, *minor)),
            (Kind::BlockDevice { major, minor }, None) => (b'4', 0, b"", (*major, *minor)),
            (Kind::Fifo, None) => (b'6', 0, b"", (0, 0)),
        };
        let unrepresentable =
            |what: &str| RootfsError::Unrepresentable { entry: display(entry.path), what: what.into() };

        let mut records: Vec<u8> = Vec::new();
        let mut header = [0u8; BLOCK];
        let binary = (name.len() > NAME_LEN && std::str::from_utf8(&name).is_err())
            || (link.len() > NAME_LEN && std::str::from_utf8(link).is_err());
        if binary {
            pax_record(&mut records, b"hdrcharset", b"BINARY");
        }
        if name.len() > NAME_LEN {
            pax_record(&mut records, b"path", &name);
        }
        if link.len() > NAME_LEN {
            pax_record(&mut records, b"linkpath", link);
        }
        put(&mut header[0..100], &name[..name.len().min(NAME_LEN)]);
        put(&mut header[157..257], &link[..link.len().min(NAME_LEN)]);
        if !octal(&mut header[124..136], size) {
            pax_record(&mut records, b"size", size.to_string().as_bytes());
        }
        if !octal(&mut header[108..116], meta.uid) {
            pax_record(&mut records, b"uid", meta.uid.to_string().as_bytes());
        }
        if !octal(&mut header[116..124], meta.gid) {
            pax_record(&mut records, b"gid", meta.gid.to_string().as_bytes());
        }
        for (xattr, value) in &meta.xattrs {
            if xattr.is_empty() || xattr.contains(['=', '\0']) {
                return Err(unrepresentable(&format!("the xattr name {xattr:?}")));
            }
            pax_record(&mut records, format!("SCHILY.xattr.{xattr}").as_bytes(), value);
        }
        // Fit by construction: the mode is at most 0o7777, and the remaining fields are checked.
        octal(&mut header[100..108], u64::from(meta.mode & 0o7777));
        if !octal(&mut header[136..148], entry.mtime) {
            return Err(unrepresentable("the modification time"));
        }
        header[156] = typeflag;
        if !octal(&mut header[329..337], u64::from(device.0)) || !octal(&mut header[337..345], u64::from(device.1)) {
            return Err(unrepresentable("the device number"));
        }
        finish_header(&mut header);

        let write_error = |source| RootfsError::Copy { entry: display(entry.path), source };
        if !records.is_empty() {
            let mut pax = [0u8; BLOCK];
            put(&mut pax[0..100], PAX_NAME);
            octal(&mut pax[100..108], 0o644);
            octal(&mut pax[108..116], 0);
            octal(&mut pax[116..124], 0);
            if !octal(&mut pax[124..136], records.len() as u64) {
                return Err(unrepresentable("the PAX header"));
            }
            octal(&mut pax[136..148], 0);
            pax[156] = b'x';
            octal(&mut pax[329..337], 0);
            octal(&mut pax[337..345], 0);
            finish_header(&mut pax);
            self.out.write_all(&pax).map_err(write_error)?;
            self.out.write_all(&records).map_err(write_error)?;
            self.pad(records.len() as u64).map_err(write_error)?;
        }
        self.out.write_all(&header).map_err(write_error)?;
        if let (Kind::File(content), None) = (&entry.inode.kind, entry.link) {
            self.store.copy_to(content, self.out).map_err(write_error)?;
            self.pad(content.size).map_err(write_error)?;
        }
        Ok(())
    }

    fn pad(&mut self, size: u64) -> std::io::Result<()> {
        let rest = (size % BLOCK as u64) as usize;
        if rest != 0 {
            self.out.write_all(&[0u8; BLOCK][rest..])?;
        }
        Ok(())
    }

    /// The two zero blocks that end a tar archive.
    pub fn finish(self) -> std::io::Result<()> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()
    }
}

fn put(field: &mut [u8], value: &[u8]) {
    field[..value.len()].copy_from_slice(value);
}

/// Zero-padded octal digits and a NUL; false if `value` needs more digits than the field has.
fn octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return false;
    }
    put(field, text.as_bytes());
    field[digits] = 0;
    true
}

/// Adds the ustar magic and version and the header checksum (six octal digits, NUL, space).
fn finish_header(header: &mut [u8; BLOCK]) {
    put(&mut header[257..265], b"ustar\x0000");
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&byte| u32::from(byte)).sum();
    put(&mut header[148..156], format!("{sum:06o}\0 ").as_bytes());
}

/// Appends one PAX record, `<length> <key>=<value>\n`, whose length counts its own digits.
fn pax_record(records: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut length = body + 1;
    while length != body + length.to_string().len() {
        length = body + length.to_string().len();
    }
    records.extend_from_slice(length.to_string().as_bytes());
    records.push(b' ');
    records.extend_from_slice(key);
    records.push(b'=');
    records.extend_from_slice(value);
    records.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        let mut records = Vec::new();
        pax_record(&mut records, b"path", b"abc");
        assert_eq!(records, b"12 path=abc\n");
        records.clear();
        // 98 bytes of body plus a two-digit length would be 100: the length needs three digits.
        pax_record(&mut records, b"path", &[b'x'; 91]);
        assert_eq!(records.len(), 101);
        assert!(records.starts_with(b"101 path="));
    }

    #[test]
    fn octal_fields_refuse_values_that_do_not_fit() {
        let mut field = [0u8; 8];
        assert!(octal(&mut field, 0o755));
        assert_eq!(&field, b"0000755\0");
        assert!(octal(&mut field, 0o7777777));
        assert!(!octal(&mut field, 0o10000000));
    }

    #[test]
    fn headers_carry_the_gnu_checksum_format() {
        let mut header = [0u8; BLOCK];
        put(&mut header[0..100], b"./");
        finish_header(&mut header);
        let parsed = tar::Header::from_byte_slice(&header);
        assert_eq!(parsed.cksum().unwrap(), {
            let mut copy = header;
            copy[148..156].fill(b' ');
            copy.iter().map(|&byte| u32::from(byte)).sum::<u32>()
        });
        assert_eq!(&header[154..156], b"\0 ");
    }
}
