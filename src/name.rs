//! The names the control plane keys its objects by — zone origins, service names and TSIG
//! key names — each canonicalised once, where it comes in (a URL, a command being applied,
//! a bootstrap file), and carried as its own type from there: a map, a delta, a store key or
//! a history target holding one never canonicalises it again. Commands keep names as text
//! (see [`crate::cluster::Command`]); `apply` parses them once per command.
//!
//! The canonical texts are the ones the state has always used, so the store, snapshots and
//! history read and write byte for byte what they did: a zone origin is lower case with the
//! final dot (`example.com.`), a service name is relative to its zone and lower case (`@` for
//! the apex), a key name is lower case without the final dot.
//!
//! Reading one back from the state (serde: the store's values and snapshots; a store key)
//! takes only the canonical text and refuses any other: everything the state ever wrote was
//! canonical, so a text that is not is damage, and canonicalising it quietly would key the
//! object by a text its store key does not have (a delete would then miss the stored key,
//! and the object come back on the next start). A history target is parsed instead (it is
//! in the log, which must read; see `cluster::state::Target`).

use std::borrow::Borrow;
use std::fmt;

use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize, Serializer};

/// Why a name was refused. The texts are the API's 400 messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("bad zone name {given:?}: {why}")]
    Zone { given: String, why: String },
    #[error("bad service name {given:?}: {why}")]
    Service { given: String, why: String },
    /// An absolute service name outside its zone (`zone` without its final dot).
    #[error("{name} is not in zone {zone}.")]
    NotInZone { name: String, zone: String },
    #[error("bad key name {given:?}: {why}")]
    Key { given: String, why: String },
    /// Read back from the state, a text that is not the canonical one.
    #[error("{what} {given:?} is not in canonical form ({canonical:?})")]
    NotCanonical {
        what: &'static str,
        given: String,
        canonical: String,
    },
}

/// The one canonical form `given` may be read back in.
fn only_canonical<T: AsRef<str>>(
    what: &'static str,
    given: String,
    parsed: Result<T, NameError>,
) -> Result<T, NameError> {
    let parsed = parsed?;
    if parsed.as_ref() != given {
        return Err(NameError::NotCanonical {
            what,
            canonical: parsed.as_ref().to_string(),
            given,
        });
    }
    Ok(parsed)
}

macro_rules! name_type {
    ($(#[$doc:meta])* $t:ident, $what:literal, $canonical:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $t(String);

        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A text read back from the state: only its canonical form is taken.
            pub fn canonical(text: String) -> Result<$t, NameError> {
                let parsed = ($canonical)(&text);
                only_canonical($what, text, parsed)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// As its text, so that `{name:?}` in a message reads as it always did.
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        /// Look-ups by canonical text (a key name a zone's settings hold, a test's literal).
        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$t> for String {
            fn from(n: $t) -> String {
                n.0
            }
        }

        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(text: String) -> Result<$t, NameError> {
                $t::canonical(text)
            }
        }

        /// Tests only: a literal already in canonical form (anything else panics).
        #[cfg(test)]
        impl From<&str> for $t {
            fn from(text: &str) -> $t {
                match $t::canonical(text.to_string()) {
                    Ok(n) => n,
                    Err(e) => panic!("{e}"),
                }
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A zone origin: lower case, with the final dot (`example.com.`).
    ZoneName,
    "zone name",
    ZoneName::parse
);

name_type!(
    /// A service's name relative to its zone: lower case, `@` for the apex.
    ServiceName,
    "service name",
    ServiceName::parse_relative
);

name_type!(
    /// A TSIG key's name: lower case, without the final dot.
    KeyName,
    "key name",
    KeyName::parse
);

impl ZoneName {
    /// Any spelling of an origin (surrounding blanks, any case, with or without the final
    /// dot).
    pub fn parse(origin: &str) -> Result<ZoneName, NameError> {
        let mut name = Name::from_ascii(origin.trim()).map_err(|e| NameError::Zone {
            given: origin.to_string(),
            why: e.to_string(),
        })?;
        name.set_fqdn(true);
        Ok(ZoneName(name.to_lowercase().to_ascii()))
    }

    /// A DNS name's origin (already a name: nothing to refuse).
    pub fn from_name(name: &Name) -> ZoneName {
        let mut name = name.to_lowercase();
        name.set_fqdn(true);
        ZoneName(name.to_ascii())
    }

    /// The origin as a DNS name.
    pub fn to_name(&self) -> Result<Name, NameError> {
        Name::from_ascii(&self.0).map_err(|e| NameError::Zone {
            given: self.0.clone(),
            why: e.to_string(),
        })
    }
}

impl ServiceName {
    /// A service's name in `zone`: `@` or empty for the apex; a relative name in any case;
    /// an absolute one (final dot) must be in the zone and is made relative.
    pub fn parse(zone: &ZoneName, name: &str) -> Result<ServiceName, NameError> {
        let name = name.trim();
        if name == "@" || name.is_empty() {
            return Ok(ServiceName::apex());
        }
        let n = Name::from_ascii(name).map_err(|e| NameError::Service {
            given: name.to_string(),
            why: e.to_string(),
        })?;
        let lower = n.to_lowercase().to_ascii();
        let lower = lower.trim_end_matches('.');
        let zone = zone.as_str().trim_end_matches('.');
        if n.is_fqdn() {
            // An absolute name must be in the zone.
            if lower == zone {
                return Ok(ServiceName::apex());
            }
            return match lower.strip_suffix(&format!(".{zone}")) {
                Some(rel) => Ok(ServiceName(rel.to_string())),
                None => Err(NameError::NotInZone {
                    name: name.to_string(),
                    zone: zone.to_string(),
                }),
            };
        }
        Ok(ServiceName(lower.to_string()))
    }

    /// A name read back without its zone: only a relative name (or `@`) can be canonical.
    fn parse_relative(name: &str) -> Result<ServiceName, NameError> {
        if name.ends_with('.') {
            return Err(NameError::NotCanonical {
                what: "service name",
                given: name.to_string(),
                canonical: "relative, without the final dot".into(),
            });
        }
        ServiceName::parse(&ZoneName(".".into()), name)
    }

    /// The zone's apex, `@`.
    pub fn apex() -> ServiceName {
        ServiceName("@".into())
    }

    pub fn is_apex(&self) -> bool {
        self.0 == "@"
    }
}

impl KeyName {
    /// Any spelling of a key name (surrounding blanks, any case, with or without the final
    /// dot); not empty.
    pub fn parse(name: &str) -> Result<KeyName, NameError> {
        let bad = |why: String| NameError::Key {
            given: name.to_string(),
            why,
        };
        let n = Name::from_ascii(name.trim()).map_err(|e| bad(e.to_string()))?;
        let s = n.to_lowercase().to_ascii();
        let s = s.trim_end_matches('.');
        if s.is_empty() {
            return Err(bad("empty".into()));
        }
        Ok(KeyName(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(s: &str) -> ZoneName {
        ZoneName::parse(s).expect("zone")
    }

    #[test]
    fn a_zone_origin_is_lower_case_with_the_final_dot() {
        for given in [
            "Example.COM",
            "example.com.",
            " example.com \n",
            "EXAMPLE.com.",
        ] {
            assert_eq!(zone(given).as_str(), "example.com.", "{given:?}");
        }
        assert_eq!(zone("").as_str(), ".");
        let e = ZoneName::parse("a..b").expect_err("empty label");
        assert!(e.to_string().starts_with("bad zone name \"a..b\": "), "{e}");
    }

    #[test]
    fn a_service_name_is_relative_and_lower_case_at_for_the_apex() {
        let z = zone("Example.com");
        let cases = [
            ("www", "www"),
            ("WWW", "www"),
            (" Api.V2 ", "api.v2"),
            ("@", "@"),
            ("", "@"),
            ("example.com.", "@"),
            ("WWW.Example.COM.", "www"),
            // Relative: the zone is appended, not stripped.
            ("www.example.com", "www.example.com"),
        ];
        for (given, want) in cases {
            let n = ServiceName::parse(&z, given).expect(given);
            assert_eq!(n.as_str(), want, "{given:?}");
        }
        assert!(ServiceName::parse(&z, "@").expect("apex").is_apex());
        assert_eq!(
            ServiceName::parse(&z, "www.other.org.")
                .expect_err("outside")
                .to_string(),
            "www.other.org. is not in zone example.com."
        );
        let e = ServiceName::parse(&z, "a..b").expect_err("empty label");
        assert!(
            e.to_string().starts_with("bad service name \"a..b\": "),
            "{e}"
        );
    }

    #[test]
    fn a_key_name_is_lower_case_without_the_final_dot() {
        for given in ["XFR.key", "xfr.key.", " xfr.KEY. "] {
            assert_eq!(KeyName::parse(given).expect(given).as_str(), "xfr.key");
        }
        assert_eq!(
            KeyName::parse(".").expect_err("root").to_string(),
            "bad key name \".\": empty"
        );
        assert!(KeyName::parse("a..b")
            .expect_err("bad")
            .to_string()
            .starts_with("bad key name \"a..b\": "));
    }

    #[test]
    fn names_serialize_as_their_canonical_text_and_read_back_only_that() {
        let z = zone("Example.COM");
        let s = ServiceName::parse(&z, "WWW").expect("www");
        let k = KeyName::parse("Xfr.").expect("key");
        let json = serde_json::to_string(&(&z, &s, &k)).expect("json");
        assert_eq!(json, r#"["example.com.","www","xfr"]"#);
        let back: (ZoneName, ServiceName, KeyName) = serde_json::from_str(&json).expect("back");
        assert_eq!(back, (z, s, k));
        assert_eq!(
            serde_json::from_str::<ServiceName>(r#""@""#).expect("apex"),
            ServiceName::apex()
        );
        // State on disk was always canonical: any other text is damage, refused.
        for bad in [r#""Example.com.""#, r#""example.com""#, r#""a..b.""#] {
            assert!(serde_json::from_str::<ZoneName>(bad).is_err(), "{bad}");
        }
        for bad in [r#""WWW""#, r#""www.example.com.""#, r#""""#] {
            assert!(serde_json::from_str::<ServiceName>(bad).is_err(), "{bad}");
        }
        for bad in [r#""XFR""#, r#""xfr.""#, r#""""#] {
            assert!(serde_json::from_str::<KeyName>(bad).is_err(), "{bad}");
        }
        let e = serde_json::from_str::<ZoneName>(r#""Example.com.""#).expect_err("case");
        assert!(e.to_string().contains("not in canonical form"), "{e}");
    }

    #[test]
    fn a_canonical_text_reads_back_as_itself() {
        // Escapes and odd labels: parsing the canonical text again gives it unchanged, so
        // whatever the state wrote it can read.
        let z = zone("example.com");
        for given in [
            "Example.COM",
            "a\\.b.Example",
            "\\065bc.example",
            "_sip._tcp.example",
            "*.example",
            "xn--bcher-kva.example",
        ] {
            let c = zone(given);
            assert_eq!(
                ZoneName::canonical(c.to_string()).as_ref(),
                Ok(&c),
                "{given:?}"
            );
            let rel = given.trim_end_matches(".example");
            let s = ServiceName::parse(&z, rel).expect(rel);
            assert_eq!(
                ServiceName::canonical(s.to_string()).as_ref(),
                Ok(&s),
                "{rel:?}"
            );
            let k = KeyName::parse(given).expect(given);
            assert_eq!(
                KeyName::canonical(k.to_string()).as_ref(),
                Ok(&k),
                "{given:?}"
            );
        }
    }

    #[test]
    fn debug_and_display_are_the_text() {
        let k = KeyName::parse("xfr").expect("key");
        assert_eq!(format!("{k:?} {k}"), "\"xfr\" xfr");
    }
}
