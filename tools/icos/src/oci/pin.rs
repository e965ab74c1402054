//! Pin files: the one line `<name>@sha256:<64 hex digits>` that names the base image a build
//! uses, by content. Comment lines (`#`) and blank lines may surround it, so a pin can say where
//! it came from; anything else is an error, so that a merge conflict or a pasted tag never passes
//! for a pin.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::reference::{check_name, Digest};
use super::OciError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The image reference name, e.g. `guestos-base`.
    pub name: String,
    /// The manifest digest of the image.
    pub digest: Digest,
}

impl fmt::Display for Pin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}@{}", self.name, self.digest)
    }
}

impl FromStr for Pin {
    type Err = String;

    /// Parses `<name>@sha256:<64 hex digits>`; the error says what is wrong.
    fn from_str(text: &str) -> Result<Pin, String> {
        let (name, digest) =
            text.split_once('@').ok_or_else(|| format!("{text:?} is not <name>@sha256:<64 hex digits>"))?;
        check_name(name).map_err(|problem| format!("image name {name:?}: {problem}"))?;
        let digest = Digest::parse(digest).map_err(|invalid| invalid.to_string())?;
        Ok(Pin { name: name.to_owned(), digest })
    }
}

/// Parses the pin file `text`; `path` names it in errors.
pub fn parse_pin(text: &str, path: &Path) -> Result<Pin, OciError> {
    let error = |line: usize, problem: String| OciError::Pin { path: path.to_owned(), line, problem };
    let mut found: Option<(usize, Pin)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((first, _)) = &found {
            return Err(error(number, format!("a second pin (the first is on line {first}); a pin file holds one")));
        }
        found = Some((number, line.parse().map_err(|problem| error(number, problem))?));
    }
    found.map(|(_, pin)| pin).ok_or_else(|| OciError::NoPin { path: path.to_owned() })
}

/// The text of a pin file holding `pin`: its one line, ending with a newline.
pub fn format_pin(pin: &Pin) -> String {
    format!("{pin}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Result<Pin, OciError> {
        parse_pin(text, Path::new("base.pin"))
    }

    #[test]
    fn a_pin_is_one_line_among_comments_and_blank_lines() {
        let text = format!("# Rebuilt by rebuild-base.sh\n\n  guestos-base@{DIGEST}  \n# end\n");
        let pin = parse(&text).unwrap();
        assert_eq!(pin, Pin { name: "guestos-base".into(), digest: Digest::parse(DIGEST).unwrap() });
        assert_eq!(format_pin(&pin), format!("guestos-base@{DIGEST}\n"));
        assert_eq!(parse(&format_pin(&pin)).unwrap(), pin);
        assert_eq!(parse(&format!("guestos-base@{DIGEST}")).unwrap(), pin);
    }

    #[test]
    fn bad_pins_name_the_file_and_line() {
        let upper = DIGEST.to_uppercase().replace("SHA256", "sha256");
        let cases = [
            ("# only\n\n".to_owned(), "base.pin: no pin"),
            (format!("guestos-base@{DIGEST}\nother@{DIGEST}\n"), "base.pin:2: a second pin (the first is on line 1)"),
            ("\nguestos-base:latest\n".to_owned(), "base.pin:2: \"guestos-base:latest\" is not <name>@"),
            (format!("guestos-base@{upper}"), "base.pin:1: \"sha256:0123456789ABCDEF"),
            (format!("guestos-base@{DIGEST} # comment"), "base.pin:1:"),
            (format!("Guestos@{DIGEST}"), "base.pin:1: image name \"Guestos\""),
            (format!("@{DIGEST}"), "base.pin:1: image name \"\": the name is empty"),
            ("<<<<<<< HEAD\n".to_owned(), "base.pin:1:"),
        ];
        for (text, expected) in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }
}
