//! `meridian export --admin URL [--token T] DIR`: the routing state as a bootstrap
//! directory — the logical backup.
//!
//! Writes `NAME.zone` for every zone (NAME being the origin without its final dot, the text
//! as `GET /zones/{origin}` gives it but for the SOA serial, which is the one the cluster
//! publishes: its `Meridian-Serial` header), `datacenters.toml` (each datacenter with its `state`),
//! `services.toml`, `zone-settings.toml` (the zones whose settings are not the defaults)
//! and, when TSIG keys exist, `tsig.toml` with each key's name and algorithm and `secret =
//! ""`: secrets never leave the cluster, and both the bootstrap import and `meridian apply`
//! refuse an empty secret with a message that says to fill it in. A new cluster bootstrapped
//! from the directory, or `meridian apply` of it onto an empty one, gives the same answers.
//!
//! DNSSEC keys are not exported (private keys never leave the cluster): the report warns
//! about every signed zone, which must be signed again, with a new DS, after a restore.
//!
//! Everything is read before anything is written, and only into a new or empty directory,
//! so an export never mixes with older files. Reads need no token unless the server says
//! so; without the write token, credentials in health-check URLs come back masked (`***`),
//! and the report says which datacenters that touched.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::client::Api;
use crate::model::{Coordinates, DcState, HealthCheck, Service};
use crate::zoneconf::{ZoneSettings, ZoneSettingsEntry};

/// What the server shows in place of a credential it does not show to a caller without the
/// write token.
const MASK: &str = "***";

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub dir: PathBuf,
    /// Every file written, in the order written.
    pub files: Vec<PathBuf>,
    pub zones: usize,
    pub datacenters: usize,
    pub services: usize,
    pub zone_settings: usize,
    pub tsig_keys: usize,
    /// The datacenters whose health-check URL came back with its credentials masked.
    pub masked: Vec<String>,
    /// The signed zones, each with its DNSSEC algorithm: their keys are not exported.
    pub signed: Vec<(String, String)>,
    /// The zones whose SOA serial field could not be found in their text to put the
    /// published serial in (their text is written as the cluster has it).
    pub serial_kept: Vec<String>,
}

impl ExportReport {
    /// What the operator must know before using the directory: one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.masked.is_empty() {
            out.push(format!(
                "the health-check URLs of datacenter(s) {} came back with their credentials masked ({MASK}): \
                 export with the write token to keep them, or fill them in {} before importing",
                self.masked.join(", "),
                self.dir.join("datacenters.toml").display()
            ));
        }
        if self.tsig_keys > 0 {
            out.push(format!(
                "TSIG secrets are never exported: fill in each key's base64 secret in {} before importing",
                self.dir.join("tsig.toml").display()
            ));
        }
        if !self.serial_kept.is_empty() {
            out.push(format!(
                "the SOA serial of zone(s) {} was not found in their text, which is written as it is: \
                 the serial they publish may be ahead of it; raise it before restoring, or secondaries \
                 see the zone go back",
                self.serial_kept.join(", ")
            ));
        }
        if !self.signed.is_empty() {
            let zones: Vec<String> = self
                .signed
                .iter()
                .map(|(origin, alg)| format!("{origin} ({alg})"))
                .collect();
            out.push(format!(
                "DNSSEC keys are never exported; signed zone(s): {}. A cluster restored from this \
                 directory answers them unsigned: sign each again (PUT /api/v1/zones/ORIGIN/dnssec) \
                 and replace its DS at the parent, or remove the DS first",
                zones.join(", ")
            ));
        }
        out
    }
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        write!(
            f,
            "exported {} zone(s), {} datacenter(s), {} service(s), {} zone setting(s) and {} TSIG key(s) to {}",
            self.zones,
            self.datacenters,
            self.services,
            self.zone_settings,
            self.tsig_keys,
            self.dir.display()
        )
    }
}

/// A datacenter as `datacenters.toml` holds it: the definition and the drain state (health
/// is the probes' verdict and is not exported).
#[derive(Serialize)]
struct DatacenterOut {
    id: String,
    location: Coordinates,
    addresses: Vec<std::net::IpAddr>,
    weight: u16,
    state: DcState,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check: Option<HealthCheck>,
}

#[derive(Serialize)]
struct DatacentersOut {
    datacenter: Vec<DatacenterOut>,
}

#[derive(Serialize)]
struct ServicesOut {
    service: Vec<Service>,
}

#[derive(Serialize)]
struct SettingsOut {
    zone: Vec<ZoneSettingsEntry>,
}

#[derive(Serialize)]
struct KeyOut {
    name: String,
    algorithm: String,
    secret: String,
}

#[derive(Serialize)]
struct KeysOut {
    key: Vec<KeyOut>,
}

/// Read the routing state from the admin API at `admin` and write it into `dir` (created, or
/// existing and empty). `token` is sent when given: the write token gets health-check URLs
/// unmasked.
pub async fn export(
    admin: &str,
    token: Option<&str>,
    cacert: Option<&Path>,
    dir: &Path,
) -> anyhow::Result<ExportReport> {
    check_target(dir)?;
    let api = Api::new(admin, token, cacert)?;
    let mut report = ExportReport {
        dir: dir.to_path_buf(),
        ..ExportReport::default()
    };
    let mut files: Vec<(String, String)> = Vec::new();

    let zones = api.zones().await?;
    let mut services = Vec::new();
    let mut settings = Vec::new();
    for origin in &zones {
        let stem = file_stem(origin)?;
        let Some((text, serial)) = api.zone_with_serial(origin).await? else {
            bail!("zone {origin} was deleted while it was exported: export again");
        };
        // The serial the cluster publishes (a drain, a verdict or an UPDATE may have moved
        // it past the text's), so that a cluster restored from the export does not go
        // back for the zone's secondaries.
        let text = match serial {
            Some(serial) => match with_serial(&text, serial) {
                Some(t) => t,
                None => {
                    report.serial_kept.push(origin.clone());
                    text
                }
            },
            None => text,
        };
        files.push((format!("{stem}.zone"), text));
        services.extend(api.services(origin).await?.iter().map(|s| s.to_service()));
        if let Some(alg) = api.dnssec_algorithm(origin).await? {
            report.signed.push((origin.clone(), alg));
        }
        if let Some(s) = api.zone_settings(origin).await? {
            if s != ZoneSettings::default() {
                settings.push(ZoneSettingsEntry {
                    origin: origin.clone(),
                    settings: s,
                });
            }
        }
    }
    report.zones = zones.len();

    let mut datacenters = Vec::new();
    for dc in api.datacenters().await? {
        if let Some(HealthCheck::Http { url, .. }) = &dc.health_check {
            if url.contains(MASK) {
                report.masked.push(dc.id.clone());
            }
        }
        datacenters.push(DatacenterOut {
            id: dc.id,
            location: dc.location,
            addresses: dc.addresses,
            weight: dc.weight,
            state: dc.state,
            health_check: dc.health_check,
        });
    }
    report.datacenters = datacenters.len();
    report.services = services.len();
    report.zone_settings = settings.len();

    let keys: Vec<KeyOut> = api
        .tsig_keys()
        .await?
        .into_iter()
        .map(|k| KeyOut {
            name: k.name,
            algorithm: k.algorithm,
            secret: String::new(),
        })
        .collect();
    report.tsig_keys = keys.len();

    files.push((
        "datacenters.toml".into(),
        toml_file(
            "# Datacenters, each with its drain state (meridian export).\n",
            &DatacentersOut {
                datacenter: datacenters,
            },
        )?,
    ));
    files.push((
        "services.toml".into(),
        toml_file(
            "# Services (meridian export).\n",
            &ServicesOut { service: services },
        )?,
    ));
    files.push((
        "zone-settings.toml".into(),
        toml_file(
            "# Zone settings that are not the defaults (meridian export).\n",
            &SettingsOut { zone: settings },
        )?,
    ));
    if !keys.is_empty() {
        files.push((
            "tsig.toml".into(),
            toml_file(
                "# TSIG keys (meridian export). Secrets are never exported: fill in each key's\n\
                 # base64 secret before importing; an empty one is refused.\n",
                &KeysOut { key: keys },
            )?,
        ));
    }

    // Checked again: the directory may have filled while the state was read.
    check_target(dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        report.files.push(path);
    }
    Ok(report)
}

/// `text` with the serial field of its SOA record set to `serial`, the rest byte for byte
/// (comments, layout, parentheses kept); the same text when it has that serial already.
/// `None` when no SOA record is found. RFC 1035 §5.1 tokens: `;` comments, quoted strings,
/// `\` escapes, and parentheses that continue a record over lines.
fn with_serial(text: &str, serial: u32) -> Option<String> {
    let serial_field = crate::zone::soa_serial_span(text)?;
    let mut out = String::with_capacity(text.len() + 10);
    out.push_str(&text[..serial_field.start]);
    out.push_str(&serial.to_string());
    out.push_str(&text[serial_field.end..]);
    Some(out)
}

/// `dir` must not exist, or be an empty directory.
fn check_target(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{}: the directory is not empty; export writes only into a new or empty directory",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if dir.exists() && !dir.is_dir() => {
            bail!("{}: not a directory ({e})", dir.display())
        }
        Err(e) => Err(e).with_context(|| dir.display().to_string()),
    }
}

/// The file name stem for a zone: its origin without the final dot. Refused when that is
/// not a plain file name (the root zone, or a name with a slash).
fn file_stem(origin: &str) -> anyhow::Result<&str> {
    let stem = origin.strip_suffix('.').unwrap_or(origin);
    if stem.is_empty() || stem.starts_with('.') || stem.contains(['/', '\\', '\0']) {
        bail!("zone {origin:?} cannot be written as NAME.zone: its name is not a plain file name");
    }
    Ok(stem)
}

/// A TOML file: `header` (comment lines), then the value's arrays of tables, each table's
/// sub-tables written inline (`location = { lat = 51.5, lon = -0.1 }`) so that every
/// object reads as one block. A value whose arrays are all empty is the header alone.
fn toml_file<T: Serialize>(header: &str, value: &T) -> anyhow::Result<String> {
    let text = toml::to_string(value).context("rendering TOML")?;
    let mut doc: toml_edit::DocumentMut = text.parse().context("re-reading rendered TOML")?;
    let mut empty = true;
    for (_, item) in doc.as_table_mut().iter_mut() {
        if let Some(tables) = item.as_array_of_tables_mut() {
            for table in tables.iter_mut() {
                empty = false;
                inline_children(table);
            }
        } else if item.as_array().is_some_and(|a| !a.is_empty()) {
            empty = false;
        }
    }
    if empty {
        return Ok(header.to_string());
    }
    // An empty array (`zone = []`) says nothing a missing one does not.
    doc.as_table_mut()
        .retain(|_, item| !item.as_array().is_some_and(|a| a.is_empty()));
    let body = doc.to_string();
    let newline = if body.ends_with('\n') { "" } else { "\n" };
    Ok(format!("{header}\n{body}{newline}"))
}

/// Turn a table's sub-tables and arrays of tables into inline values (moved to the end, in
/// their order, with the usual `key = value` spacing).
fn inline_children(table: &mut toml_edit::Table) {
    let nested: Vec<String> = table
        .iter()
        .filter(|(_, item)| item.is_table() || item.is_array_of_tables())
        .map(|(k, _)| k.to_string())
        .collect();
    for key in nested {
        let value = match table.remove(&key) {
            Some(toml_edit::Item::Table(t)) => toml_edit::Value::InlineTable(t.into_inline_table()),
            Some(toml_edit::Item::ArrayOfTables(a)) => toml_edit::Value::Array(a.into_array()),
            _ => continue,
        };
        table.insert(&key, toml_edit::Item::Value(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DatacentersFile, ServicesFile};
    use crate::zoneconf::{TsigFile, ZoneSettingsFile};

    #[test]
    fn rendered_files_read_back_as_the_bootstrap_reads_them() {
        let dcs = DatacentersOut {
            datacenter: vec![DatacenterOut {
                id: "lon".into(),
                location: Coordinates {
                    lat: 51.5,
                    lon: -0.1,
                },
                addresses: vec![
                    "192.0.2.1".parse().expect("ip"),
                    "2001:db8::1".parse().expect("ip"),
                ],
                weight: 7,
                state: DcState::Drained,
                health_check: Some(HealthCheck::Http {
                    url: "http://u:p@127.0.0.1:9/h?k=v".into(),
                    interval: Some(crate::model::CheckDuration::parse("1s").expect("1s")),
                    timeout: None,
                    rise: Some(2),
                    fall: None,
                }),
            }],
        };
        let text = toml_file("# x\n", &dcs).expect("toml");
        assert!(
            text.contains("\nlocation = { lat = 51.5, lon = -0.1 }\n"),
            "one block per object:\n{text}"
        );
        let back: DatacentersFile = toml::from_str(&text).expect("reads back");
        let dc = &back.datacenter[0];
        assert_eq!((dc.weight, dc.state), (7, DcState::Drained), "{text}");
        assert_eq!(dc.location.lon, -0.1);
        assert_eq!(dc.health_check, dcs.datacenter[0].health_check);

        let svc: Service = toml::from_str(
            "zone = \"example.com.\"\nname = \"www\"\npolicy = \"geo_nearest\"\ndatacenters = [\"lon\"]\noverrides = { \"country:GB\" = [\"lon\"] }\n",
        )
        .expect("service");
        let text = toml_file(
            "",
            &ServicesOut {
                service: vec![svc.clone()],
            },
        )
        .expect("toml");
        let back: ServicesFile = toml::from_str(&text).expect("reads back");
        assert_eq!(back.service, vec![svc], "{text}");

        let settings: ZoneSettings = serde_json::from_str(
            r#"{"allow_transfer":["key:k","127.0.0.0/8"],"notify":["127.0.0.1:5301"],"notify_key":"k",
                "allow_update":[{"key":"k","name":"_acme-challenge.example.com.","match":"subdomain","types":["TXT"]}],
                "serial":"unixtime"}"#,
        )
        .expect("settings");
        let text = toml_file(
            "",
            &SettingsOut {
                zone: vec![ZoneSettingsEntry {
                    origin: "example.com.".into(),
                    settings: settings.clone(),
                }],
            },
        )
        .expect("toml");
        let back: ZoneSettingsFile = toml::from_str(&text).expect("reads back");
        assert_eq!(back.zone[0].settings, settings, "{text}");
        let none = toml_file("# none\n", &SettingsOut { zone: Vec::new() }).expect("toml");
        assert_eq!(none, "# none\n");
        let back: ZoneSettingsFile = toml::from_str(&none).expect("reads back");
        assert!(back.zone.is_empty());

        let text = toml_file(
            "",
            &KeysOut {
                key: vec![KeyOut {
                    name: "k".into(),
                    algorithm: "hmac-sha256".into(),
                    secret: String::new(),
                }],
            },
        )
        .expect("toml");
        let back: TsigFile = toml::from_str(&text).expect("reads back");
        let e = back.key[0].to_key("k").expect_err("empty secret");
        assert!(e.to_string().contains("fill in"), "{e}");
    }

    #[test]
    fn a_non_empty_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(check_target(dir.path()).is_ok());
        assert!(check_target(&dir.path().join("new")).is_ok());
        std::fs::write(dir.path().join("x"), "x").expect("write");
        let e = check_target(dir.path()).expect_err("not empty");
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
        assert!(check_target(&dir.path().join("x")).is_err(), "a file");
    }

    #[test]
    fn the_published_serial_replaces_the_soa_serial_and_nothing_else() {
        let cases = [
            (
                "$TTL 300\n@ IN SOA ns1 h 42 2 3 4 5\n@ IN NS ns1\n",
                "$TTL 300\n@ IN SOA ns1 h 2026120701 2 3 4 5\n@ IN NS ns1\n",
            ),
            // Over lines in parentheses, with comments, a TTL and lower case.
            (
                "; soa 1 2 3\n$ORIGIN example.com.\nexample.com. 3600 in soa ns1.example.com. (\n  host.example.com. ; 7\n  42 ; serial\n  7200 3600 1209600 300 )\n",
                "; soa 1 2 3\n$ORIGIN example.com.\nexample.com. 3600 in soa ns1.example.com. (\n  host.example.com. ; 7\n  2026120701 ; serial\n  7200 3600 1209600 300 )\n",
            ),
            // No owner (a line starting with blank); a name called soa before it; a TXT
            // that says SOA.
            (
                "soa IN A 192.0.2.1\nt IN TXT \"SOA a b 9\"\n 300 IN SOA ns1 h 42 2 3 4 5",
                "soa IN A 192.0.2.1\nt IN TXT \"SOA a b 9\"\n 300 IN SOA ns1 h 2026120701 2 3 4 5",
            ),
            (
                "@ IN SOA ns1 h 42 2 3 4 5\n",
                "@ IN SOA ns1 h 2026120701 2 3 4 5\n",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                with_serial(text, 2026120701).as_deref(),
                Some(want),
                "{text}"
            );
        }
        assert_eq!(
            with_serial("@ IN NS ns1\nx CNAME soa\ny TXT 5 6 7\n", 9),
            None
        );
        assert_eq!(with_serial("", 9), None);
    }

    #[test]
    fn zone_file_names_are_plain() {
        assert_eq!(file_stem("example.com.").expect("stem"), "example.com");
        assert!(file_stem(".").is_err());
        assert!(file_stem("a/b.").is_err());
    }
}
