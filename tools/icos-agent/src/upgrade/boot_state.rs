//! The boot state in two copies: `grubenv` and `grubenv.copy` on the GRUB partition, each a whole
//! GRUB environment block. GRUB (ic-os/bootloader/grub.cfg.in) and the agent write both, `grubenv`
//! first, so that a write torn by a power cut or a crash leaves the other copy whole: when both are
//! valid, `grubenv` is the newer. A copy is valid when it parses and says which slot to boot
//! (`boot_alternative` A or B) and how (`boot_cycle`, one of [`BootCycle`]). GRUB boots from
//! `grubenv`, from the copy when `grubenv` is damaged, and from slot A when both are, saying so on
//! the console each time; the agent reads them the same way, reports a damaged copy in `status` and
//! rewrites it with `repair`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{BootCycle, Slot, UpgradeError, BOOT_ALTERNATIVE, BOOT_CYCLE};
use crate::grubenv::{GrubEnv, GrubEnvError, BLOCK_SIZE};

/// The copy of `grubenv`: the same name with this suffix, next to it.
pub const COPY_SUFFIX: &str = ".copy";

/// Where the copy of `grubenv` is.
pub fn copy_path(grubenv: &Path) -> PathBuf {
    let mut path = grubenv.as_os_str().to_owned();
    path.push(COPY_SUFFIX);
    PathBuf::from(path)
}

/// One valid copy of the boot state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootState {
    pub env: GrubEnv,
    pub boot_alternative: Slot,
    pub boot_cycle: BootCycle,
}

/// The boot state as GRUB reads it, and what is wrong with the copies.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub state: BootState,
    /// Why `grubenv` is damaged, when the state came from the copy.
    pub grubenv_damage: Option<String>,
    /// Why the copy is damaged, or that it differs from `grubenv`.
    pub copy_damage: Option<String>,
}

impl Loaded {
    /// What `status` says when a copy needs `repair`.
    pub fn damage(&self, grubenv: &Path) -> Option<String> {
        let copy = copy_path(grubenv);
        match (&self.grubenv_damage, &self.copy_damage) {
            (Some(problem), _) => Some(format!(
                "{} is damaged ({problem}): the boot state was read from {}; icos-agent repair restores it",
                grubenv.display(),
                copy.display()
            )),
            (None, Some(problem)) => Some(format!(
                "{} {problem}: GRUB has no copy to fall back on; icos-agent repair restores it",
                copy.display()
            )),
            (None, None) => None,
        }
    }
}

/// Reads one copy and checks that it says which slot to boot and how.
pub fn read_copy(path: &Path) -> Result<BootState, String> {
    let env = GrubEnv::read(path).map_err(|error| match error {
        GrubEnvError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => "it is missing".to_owned(),
        GrubEnvError::Io { source, .. } => source.to_string(),
        GrubEnvError::Malformed { problem, .. } => format!("not a GRUB environment block: {problem}"),
        other => other.to_string(),
    })?;
    let cycle = env.get(BOOT_CYCLE).ok_or(format!("{BOOT_CYCLE} is not set"))?;
    let boot_cycle = BootCycle::parse(cycle).ok_or(format!("{BOOT_CYCLE} has the unknown value {cycle:?}"))?;
    let alternative = env.get(BOOT_ALTERNATIVE).ok_or(format!("{BOOT_ALTERNATIVE} is not set"))?;
    let boot_alternative =
        Slot::parse(alternative).ok_or(format!("{BOOT_ALTERNATIVE} is {alternative:?}, not A or B"))?;
    Ok(BootState { env, boot_alternative, boot_cycle })
}

/// Reads the boot state as GRUB does: `grubenv`, else its copy.
pub fn load(grubenv: &Path) -> Result<Loaded, UpgradeError> {
    let copy = copy_path(grubenv);
    match (read_copy(grubenv), read_copy(&copy)) {
        (Ok(state), Ok(copied)) => {
            let copy_damage = (copied.env != state.env).then(|| format!("differs from {}", grubenv.display()));
            Ok(Loaded { state, grubenv_damage: None, copy_damage })
        }
        (Ok(state), Err(problem)) => {
            Ok(Loaded { state, grubenv_damage: None, copy_damage: Some(format!("is damaged ({problem})")) })
        }
        (Err(problem), Ok(state)) => Ok(Loaded { state, grubenv_damage: Some(problem), copy_damage: None }),
        (Err(grubenv_problem), Err(copy_problem)) => {
            Err(UpgradeError::BootStateLost { grubenv: grubenv.to_owned(), grubenv_problem, copy, copy_problem })
        }
    }
}

/// Writes `env` to `grubenv`, then to its copy. Each is overwritten in place (a FAT file keeps its
/// clusters), made a whole block first if it is missing or of another size.
pub fn write(grubenv: &Path, env: &GrubEnv) -> Result<(), UpgradeError> {
    for path in [grubenv.to_owned(), copy_path(grubenv)] {
        let io_error = |source| UpgradeError::Write { path: path.clone(), source };
        let file = fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path).map_err(io_error)?;
        if file.metadata().map_err(io_error)?.len() != BLOCK_SIZE as u64 {
            file.set_len(BLOCK_SIZE as u64).map_err(io_error)?;
        }
        drop(file);
        env.write_in_place(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(variables: &[(&str, &str)]) -> GrubEnv {
        let mut env = GrubEnv::new();
        for (name, value) in variables {
            env.set(name, value).unwrap();
        }
        env
    }

    const STABLE_B: [(&str, &str); 2] = [("boot_alternative", "B"), ("boot_cycle", "stable")];

    #[test]
    fn the_copy_is_named_after_grubenv() {
        assert_eq!(copy_path(Path::new("/grub/grubenv")), Path::new("/grub/grubenv.copy"));
    }

    #[test]
    fn both_copies_are_written_and_grubenv_wins_when_both_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let grubenv = dir.path().join("grubenv");
        write(&grubenv, &env(&STABLE_B)).unwrap();
        assert_eq!(fs::read(&grubenv).unwrap(), fs::read(copy_path(&grubenv)).unwrap());
        let loaded = load(&grubenv).unwrap();
        assert_eq!((loaded.state.boot_alternative, loaded.state.boot_cycle), (Slot::B, BootCycle::Stable));
        assert!(loaded.damage(&grubenv).is_none());

        // A write that stopped between the two copies: grubenv is the newer.
        env(&[("boot_alternative", "A"), ("boot_cycle", "first_boot")]).write_in_place(&grubenv).unwrap();
        let loaded = load(&grubenv).unwrap();
        assert_eq!(loaded.state.boot_alternative, Slot::A);
        let damage = loaded.damage(&grubenv).unwrap();
        assert!(
            damage.ends_with(&format!(
                "grubenv.copy differs from {}: GRUB has no copy to fall back on; icos-agent repair restores it",
                grubenv.display()
            )),
            "{damage}"
        );
    }

    #[test]
    fn a_damaged_grubenv_is_read_from_its_copy_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let grubenv = dir.path().join("grubenv");
        write(&grubenv, &env(&STABLE_B)).unwrap();
        let mut block = fs::read(&grubenv).unwrap();
        block[..7].copy_from_slice(b"garbage");
        fs::write(&grubenv, &block).unwrap();
        let loaded = load(&grubenv).unwrap();
        assert_eq!(loaded.state.boot_alternative, Slot::B);
        let damage = loaded.damage(&grubenv).unwrap();
        assert!(
            damage.contains("grubenv is damaged (not a GRUB environment block: the signature line is missing): the boot state was read from"),
            "{damage}"
        );
        // Rewriting both repairs it, in place.
        write(&grubenv, &loaded.state.env).unwrap();
        assert!(load(&grubenv).unwrap().damage(&grubenv).is_none());
    }

    #[test]
    fn a_copy_without_a_slot_or_a_cycle_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        for (variables, problem) in [
            (&[("boot_cycle", "stable")][..], "boot_alternative is not set"),
            (&[("boot_alternative", "C"), ("boot_cycle", "stable")], "boot_alternative is \"C\", not A or B"),
            (&[("boot_alternative", "A")], "boot_cycle is not set"),
            (&[("boot_alternative", "A"), ("boot_cycle", "stabel")], "boot_cycle has the unknown value \"stabel\""),
        ] {
            env(variables).write_new(&path).unwrap();
            assert_eq!(read_copy(&path).unwrap_err(), problem);
        }
        fs::remove_file(&path).unwrap();
        assert_eq!(read_copy(&path).unwrap_err(), "it is missing");
    }

    #[test]
    fn losing_both_copies_names_both_problems_and_a_write_makes_both_anew() {
        let dir = tempfile::tempdir().unwrap();
        let grubenv = dir.path().join("grubenv");
        fs::write(&grubenv, b"short").unwrap();
        let error = load(&grubenv).unwrap_err().to_string();
        assert!(error.contains("not a GRUB environment block: 5 bytes instead of 1024"), "{error}");
        assert!(error.contains("grubenv.copy: it is missing"), "{error}");
        write(&grubenv, &env(&STABLE_B)).unwrap();
        assert!(load(&grubenv).unwrap().damage(&grubenv).is_none());
    }
}
