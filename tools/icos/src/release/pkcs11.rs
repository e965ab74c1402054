//! Release keys in a PKCS#11 token (an HSM, a smart card, SoftHSM2), named by a PKCS#11 URI
//! (RFC 7512), such as
//! `pkcs11:token=icos-release;object=release?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/icos/pin`.
//!
//! The private key never leaves the token: the manifest is signed inside it with `CKM_EDDSA`
//! (pure Ed25519, the signature a key file gives). Its public half comes from the token's public
//! key object with the private key's ID and label, and every signature is checked against it
//! before a bundle is written.
//!
//! Of the URI, the path attributes `token`, `serial`, `object`, `id` and `type` (which must be
//! `private`) select the token and the key, and the query attributes `module-path` (required),
//! `pin-value` and `pin-source` (a file holding the PIN, as a path or a `file:` URI) load the
//! module and log in. Anything else is refused rather than ignored: a key chosen by a looser
//! match than the URI says could sign with the wrong key.

use std::fs;
use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ed25519_dalek::{Signature, VerifyingKey};

use super::{ManifestSigner, ReleaseError};

/// What a `pkcs11:` URI says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub module_path: PathBuf,
    pub pin: Option<PinSource>,
    /// The URI as given, with a `pin-value` hidden: how messages name the key.
    pub shown: String,
}

#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    Value(String),
    File(PathBuf),
}

impl std::fmt::Debug for PinSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSource::Value(_) => formatter.write_str("Value(hidden)"),
            PinSource::File(path) => formatter.debug_tuple("File").field(path).finish(),
        }
    }
}

impl Pkcs11Uri {
    pub fn parse(text: &str) -> Result<Pkcs11Uri, ReleaseError> {
        let shown = hide_pin_value(text);
        let bad = |problem: String| ReleaseError::Signing { key: shown.clone(), problem };
        let rest = text.strip_prefix("pkcs11:").ok_or_else(|| bad("not a pkcs11: URI".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri {
            token: None,
            serial: None,
            object: None,
            id: None,
            module_path: PathBuf::new(),
            pin: None,
            shown: shown.clone(),
        };
        let mut seen = Vec::new();
        let mut module_path = None;
        for (attributes, separator) in [(path, ';'), (query, '&')] {
            for attribute in attributes.split(separator).filter(|attribute| !attribute.is_empty()) {
                let (name, value) =
                    attribute.split_once('=').ok_or_else(|| bad(format!("{attribute:?} is not NAME=VALUE")))?;
                if seen.contains(&name) {
                    return Err(bad(format!("{name} is given twice")));
                }
                seen.push(name);
                let value = percent_decode(value).map_err(|problem| bad(format!("{name}: {problem}")))?;
                let text = || String::from_utf8(value.clone()).map_err(|_| bad(format!("{name} is not UTF-8")));
                match (separator, name) {
                    (';', "token") => uri.token = Some(text()?),
                    (';', "serial") => uri.serial = Some(text()?),
                    (';', "object") => uri.object = Some(text()?),
                    (';', "id") => uri.id = Some(value),
                    (';', "type") if value == b"private" => {}
                    (';', "type") => return Err(bad("type must be private: the key that signs".into())),
                    ('&', "module-path") => module_path = Some(PathBuf::from(text()?)),
                    ('&', "pin-value") => uri.pin = Some(PinSource::Value(text()?)),
                    ('&', "pin-source") => {
                        let source = text()?;
                        uri.pin = Some(PinSource::File(PathBuf::from(source.strip_prefix("file:").unwrap_or(&source))));
                    }
                    (';', _) => {
                        return Err(bad(format!(
                            "unknown path attribute {name:?} (icos selects by token, serial, object, id and type)"
                        )))
                    }
                    _ => {
                        return Err(bad(format!(
                            "unknown query attribute {name:?} (icos reads module-path, pin-value and pin-source)"
                        )))
                    }
                }
            }
        }
        if seen.contains(&"pin-value") && seen.contains(&"pin-source") {
            return Err(bad("pin-value and pin-source are both given".into()));
        }
        uri.module_path =
            module_path.ok_or_else(|| bad("it names no module-path (the PKCS#11 module to load)".into()))?;
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad("it names no key: give object (its label) or id".into()));
        }
        Ok(uri)
    }
}

/// The URI with the value of every `pin-value` replaced, for messages: in the query, where it
/// belongs, and in the path, where it is refused.
fn hide_pin_value(text: &str) -> String {
    let (mut shown, mut rest) = match text.strip_prefix("pkcs11:") {
        Some(rest) => (String::from("pkcs11:"), rest),
        None => (String::new(), text),
    };
    loop {
        let end = rest.find(['?', ';', '&']).unwrap_or(rest.len());
        let attribute = &rest[..end];
        shown.push_str(if attribute.starts_with("pin-value=") { "pin-value=(hidden)" } else { attribute });
        let Some(separator) = rest[end..].chars().next() else { break };
        shown.push(separator);
        rest = &rest[end + 1..];
    }
    shown
}

/// RFC 3986 percent-decoding: `%XX` is the byte XX.
fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("a % at byte {index} is not followed by two hex digits"))?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Ok(decoded)
}

/// An Ed25519 private key in a token, with a logged-in session to sign with.
pub struct TokenKey {
    shown: String,
    session: Session,
    key: ObjectHandle,
    public: VerifyingKey,
}

impl TokenKey {
    /// Loads the URI's module, finds its token and key, and logs in.
    pub fn open(text: &str) -> Result<TokenKey, ReleaseError> {
        let uri = Pkcs11Uri::parse(text)?;
        let bad = |problem: String| ReleaseError::Signing { key: uri.shown.clone(), problem };
        let pin = match &uri.pin {
            None => None,
            Some(PinSource::Value(pin)) => Some(pin.clone()),
            Some(PinSource::File(path)) => {
                let text = fs::read_to_string(path)
                    .map_err(|error| bad(format!("cannot read the PIN from {}: {error}", path.display())))?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            }
        };
        let module = Pkcs11::new(&uri.module_path)
            .map_err(|error| bad(format!("cannot load the module {}: {error}", uri.module_path.display())))?;
        module
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|error| bad(format!("the module does not initialize: {error}")))?;
        let mut tokens = Vec::new();
        let mut matching = Vec::new();
        for slot in module.get_slots_with_token().map_err(|error| bad(format!("cannot list the tokens: {error}")))? {
            let info = module.get_token_info(slot).map_err(|error| bad(format!("cannot read a token: {error}")))?;
            // A blank token (SoftHSM2 always offers one) holds no key.
            if !info.token_initialized() {
                continue;
            }
            let (label, serial) = (info.label().to_owned(), info.serial_number().to_owned());
            if uri.token.as_ref().is_none_or(|token| *token == label)
                && uri.serial.as_ref().is_none_or(|wanted| *wanted == serial)
            {
                matching.push((slot, label.clone()));
            }
            tokens.push(format!("{label:?} (serial {serial})"));
        }
        let tokens = if tokens.is_empty() { "none".to_owned() } else { tokens.join(", ") };
        let (slot, token) = match matching.len() {
            1 => matching.remove(0),
            0 => return Err(bad(format!("no token matches; the module has {tokens}"))),
            _ => {
                return Err(bad(format!("{} tokens match; name one with token= or serial= ({tokens})", matching.len())))
            }
        };
        let session = module
            .open_ro_session(slot)
            .map_err(|error| bad(format!("cannot open a session on {token:?}: {error}")))?;
        if let Some(pin) = pin {
            session
                .login(UserType::User, Some(&AuthPin::from(pin)))
                .map_err(|error| bad(format!("cannot log in to {token:?}: {error}")))?;
        }
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::KeyType(KeyType::EC_EDWARDS)];
        template.extend(uri.object.iter().map(|label| Attribute::Label(label.as_bytes().to_vec())));
        template.extend(uri.id.iter().map(|id| Attribute::Id(id.clone())));
        let keys = session.find_objects(&template).map_err(|error| bad(format!("cannot search {token:?}: {error}")))?;
        let key = match keys.as_slice() {
            [key] => *key,
            [] if uri.pin.is_none() => {
                return Err(bad(format!(
                    "{token:?} shows no such Ed25519 private key without a login: give pin-value or pin-source"
                )))
            }
            [] => return Err(bad(format!("{token:?} holds no such Ed25519 private key"))),
            _ => {
                return Err(bad(format!(
                    "{} Ed25519 private keys in {token:?} match; name one with object= and id=",
                    keys.len()
                )))
            }
        };
        let public = public_half(&session, key).map_err(|problem| bad(format!("{token:?}: {problem}")))?;
        Ok(TokenKey { shown: uri.shown, session, key, public })
    }
}

/// The public key of `key`: the token's Ed25519 public key object with its ID and label.
fn public_half(session: &Session, key: ObjectHandle) -> Result<VerifyingKey, String> {
    let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::KeyType(KeyType::EC_EDWARDS)];
    let attributes = session
        .get_attributes(key, &[AttributeType::Id, AttributeType::Label])
        .map_err(|error| format!("cannot read the private key's ID and label: {error}"))?;
    template.extend(attributes.into_iter().filter(|attribute| match attribute {
        Attribute::Id(bytes) | Attribute::Label(bytes) => !bytes.is_empty(),
        _ => false,
    }));
    let objects =
        session.find_objects(&template).map_err(|error| format!("cannot search for the public key: {error}"))?;
    let [object] = objects.as_slice() else {
        return Err(format!(
            "{} public key objects have the private key's ID and label; one is needed to check its signatures",
            objects.len()
        ));
    };
    let point = session
        .get_attributes(*object, &[AttributeType::EcPoint])
        .map_err(|error| format!("cannot read the public key: {error}"))?
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::EcPoint(point) => Some(point),
            _ => None,
        })
        .ok_or("the public key has no CKA_EC_POINT")?;
    // PKCS#11 3.0 stores the point DER-encoded (an OCTET STRING of 32 bytes); some tokens store the
    // 32 bytes bare.
    let bytes: &[u8] = match point.as_slice() {
        [0x04, 32, rest @ ..] if rest.len() == 32 => rest,
        bare if bare.len() == 32 => bare,
        _ => return Err(format!("the public key's CKA_EC_POINT ({} bytes) is not an Ed25519 point", point.len())),
    };
    let bytes: &[u8; 32] = bytes.try_into().expect("32 bytes");
    VerifyingKey::from_bytes(bytes).map_err(|error| format!("the public key is not a valid Ed25519 point: {error}"))
}

impl ManifestSigner for TokenKey {
    fn name(&self) -> String {
        self.shown.clone()
    }

    fn public_key(&self) -> VerifyingKey {
        self.public
    }

    fn sign_manifest(&self, manifest: &[u8]) -> Result<Signature, ReleaseError> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519));
        let bad = |problem: String| ReleaseError::Signing { key: self.shown.clone(), problem };
        let signature = self
            .session
            .sign(&mechanism, self.key, manifest)
            .map_err(|error| bad(format!("signing failed: {error}")))?;
        Signature::from_slice(&signature)
            .map_err(|_| bad(format!("the token gave a signature of {} bytes, not 64", signature.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_select_the_token_and_key_and_say_how_to_log_in() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=icos%20release;object=release;id=%01%ff;type=private\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("icos release"));
        assert_eq!(uri.object.as_deref(), Some("release"));
        assert_eq!(uri.id, Some(vec![1, 0xff]));
        assert_eq!(uri.module_path, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(uri.pin, Some(PinSource::Value("1234".into())));
        assert!(uri.shown.ends_with("&pin-value=(hidden)") && !uri.shown.contains("1234"), "{}", uri.shown);
        let uri = Pkcs11Uri::parse("pkcs11:object=k?module-path=/m.so&pin-source=file:/run/pin").unwrap();
        assert_eq!(uri.pin, Some(PinSource::File("/run/pin".into())));
    }

    #[test]
    fn uris_that_could_pick_another_key_are_refused() {
        for (text, problem) in [
            ("pkcs11:object=k", "names no module-path"),
            ("pkcs11:token=t?module-path=/m.so", "names no key"),
            ("pkcs11:object=k;model=x?module-path=/m.so", "unknown path attribute \"model\""),
            ("pkcs11:object=k?module-path=/m.so&slot-id=1", "unknown query attribute \"slot-id\""),
            ("pkcs11:object=k;type=public?module-path=/m.so", "type must be private"),
            ("pkcs11:object=k;object=l?module-path=/m.so", "object is given twice"),
            ("pkcs11:id=%1?module-path=/m.so", "not followed by two hex digits"),
            ("pkcs11:object=k?module-path=/m.so&pin-value=1&pin-source=/p", "both given"),
            ("file.pem", "not a pkcs11: URI"),
        ] {
            let error = Pkcs11Uri::parse(text).unwrap_err().to_string();
            assert!(error.contains(problem), "{text}: {error}");
        }
        for text in
            ["pkcs11:token=t?module-path=/m.so&pin-value=secret", "pkcs11:object=k;pin-value=secret?module-path=/m.so"]
        {
            let error = Pkcs11Uri::parse(text).unwrap_err().to_string();
            assert!(error.contains("pin-value=(hidden)") && !error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn a_module_that_cannot_be_loaded_is_named() {
        let error =
            TokenKey::open("pkcs11:object=k?module-path=/nonexistent/module.so").err().expect("no module").to_string();
        assert!(error.contains("cannot load the module /nonexistent/module.so"), "{error}");
    }
}
