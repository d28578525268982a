//! `meridian apply --admin URL --token TOKEN [--prune] [--dry-run] PATH…`: push zone files
//! and the bootstrap TOML files through the admin API.
//!
//! A PATH is a file or a directory. In a directory, every `NAME.zone` (origin `NAME`),
//! `datacenters.toml` (`[[datacenter]]` with `id`), `services.toml` (`[[service]]` with
//! `zone` and `name`), `zone-settings.toml` (`[[zone]]` with `origin`) and `tsig.toml`
//! (`[[key]]` with `name`, `algorithm`, `secret`) is read; named explicitly, a `.zone` file
//! is a zone and a `.toml` file may hold any of those tables. Everything is checked locally
//! first (a TSIG key with an empty secret is refused: exports leave secrets out); then TSIG
//! keys, datacenters, zones, zone settings and services are sent in that order, each only
//! when it differs from what the cluster has (a `GET` first), so applying twice changes
//! nothing. A datacenter's `state` is sent only when its table names one: re-applying
//! definitions never undoes a drain. A TSIG key's secret cannot be read back, so an existing
//! key of the same algorithm is left alone unless `send_secrets` is set.
//!
//! Objects the files do not name are left alone — unless `prune` is set: then services,
//! zones and datacenters the files do not name (nor a named service needs) are deleted,
//! in that order, and a named zone's settings that the files do not give are reset to the
//! defaults. TSIG keys are never pruned. `--dry-run` reports what would change and sends
//! nothing but `GET`s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::admin::{DatacenterSpec, ServiceSpec};
use crate::client::{Api, DatacenterRead, ServiceRead};
use crate::model::{Datacenter, Service};
use crate::name::{KeyName, ServiceName, ZoneName};
use crate::zoneconf::{TsigKeySpec, ZoneSettings, ZoneSettingsEntry};

/// What kind of object a change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    TsigKey,
    Datacenter,
    Zone,
    ZoneSettings,
    Service,
}

/// What applying did (or, in a dry run, would do) to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Replace,
    Delete,
    Unchanged,
}

/// One object of the files (or, pruning, of the cluster) and its fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ObjectKind,
    /// `lon`, `example.com.`, `www in example.com.`
    pub name: String,
    pub action: Action,
    /// What differs (empty when created or unchanged).
    pub detail: String,
}

/// How to apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Report what would change; send nothing but `GET`s.
    pub dry_run: bool,
    /// Delete the services, zones and datacenters the files do not name.
    pub prune: bool,
    /// Send every TSIG key, even one that exists with the same algorithm (its secret cannot
    /// be read back to compare).
    pub send_secrets: bool,
}

/// Every object of the files, in the order applied, then the deletions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub dry_run: bool,
    pub prune: bool,
    pub changes: Vec<Change>,
}

impl ApplyReport {
    fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    pub fn created(&self) -> usize {
        self.count(Action::Create)
    }

    pub fn replaced(&self) -> usize {
        self.count(Action::Replace)
    }

    pub fn deleted(&self) -> usize {
        self.count(Action::Delete)
    }

    pub fn unchanged(&self) -> usize {
        self.count(Action::Unchanged)
    }

    /// Whether anything was (or would be) changed.
    pub fn changed(&self) -> bool {
        self.created() + self.replaced() + self.deleted() > 0
    }

    fn progress(&self) -> String {
        let mut s = format!(
            "after {} created and {} replaced",
            self.created(),
            self.replaced()
        );
        if self.prune {
            s.push_str(&format!(" and {} deleted", self.deleted()));
        }
        s
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::TsigKey => "tsig-key",
            ObjectKind::Datacenter => "datacenter",
            ObjectKind::Zone => "zone",
            ObjectKind::ZoneSettings => "zone-settings",
            ObjectKind::Service => "service",
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.action {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
        };
        write!(f, "{verb:<9} {} {}", self.kind, self.name)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        let (c, r, u, d) = (
            self.created(),
            self.replaced(),
            self.unchanged(),
            self.deleted(),
        );
        if self.dry_run {
            write!(f, "dry run: {c} to create, {r} to replace, ")?;
            if self.prune {
                write!(f, "{d} to delete, ")?;
            }
            write!(f, "{u} unchanged; nothing was changed")
        } else {
            write!(f, "{c} created, {r} replaced, {u} unchanged")?;
            if self.prune {
                write!(f, ", {d} deleted")?;
            }
            Ok(())
        }
    }
}

/// Push `paths` to the admin API at `admin` (`http://host:port`, with or without
/// `/api/v1`) with the write token `token`, trusting only the CA in `cacert` (PEM) for an
/// `https://` URL when given. Stops at the first error, which carries the server's message.
pub async fn apply(
    admin: &str,
    token: &str,
    cacert: Option<&Path>,
    paths: &[PathBuf],
    options: Options,
) -> anyhow::Result<ApplyReport> {
    let inputs = Inputs::read(paths)?;
    let api = Api::new(admin, Some(token), cacert)?;
    Applier {
        api: &api,
        options,
        report: ApplyReport {
            dry_run: options.dry_run,
            prune: options.prune,
            changes: Vec::new(),
        },
    }
    .run(&inputs)
    .await
}

/// One run: the API, what to do, and what was done so far.
struct Applier<'a> {
    api: &'a Api,
    options: Options,
    report: ApplyReport,
}

impl Applier<'_> {
    /// Note a change, and make it unless it is a dry run or nothing changes.
    async fn record<F, Fut>(
        &mut self,
        kind: ObjectKind,
        name: String,
        (action, detail): (Action, String),
        send: F,
    ) -> anyhow::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::client::ClientError>>,
    {
        if action != Action::Unchanged && !self.options.dry_run {
            let progress = self.report.progress();
            send().await.context(progress)?;
        }
        self.report.changes.push(Change {
            kind,
            name,
            action,
            detail,
        });
        Ok(())
    }

    async fn run(mut self, inputs: &Inputs) -> anyhow::Result<ApplyReport> {
        let api = self.api;

        // TSIG keys first: zone settings name them.
        if !inputs.tsig_keys.is_empty() {
            let current: HashMap<String, String> = api
                .tsig_keys()
                .await?
                .into_iter()
                .map(|k| (k.name, k.algorithm))
                .collect();
            for (name, spec) in &inputs.tsig_keys {
                let plan = match current.get(name) {
                    None => (Action::Create, String::new()),
                    Some(alg) if *alg != spec.algorithm => (
                        Action::Replace,
                        format!("algorithm {alg} -> {}", spec.algorithm),
                    ),
                    Some(_) if self.options.send_secrets => {
                        (Action::Replace, "secret sent again".to_string())
                    }
                    Some(_) => (
                        Action::Unchanged,
                        "secret not compared: --send-secrets sends it".to_string(),
                    ),
                };
                let segs = ["tsig-keys", name.as_str()];
                self.record(ObjectKind::TsigKey, name.clone(), plan, || {
                    api.put_json(&segs, spec)
                })
                .await?;
            }
        }

        for (id, spec) in &inputs.datacenters {
            let current: Option<Datacenter> = api
                .datacenter(id)
                .await?
                .map(|dc| DatacenterRead::to_datacenter(&dc));
            let plan = match &current {
                None => (Action::Create, String::new()),
                Some(dc) if spec.matches(dc) => (Action::Unchanged, String::new()),
                Some(dc) => (Action::Replace, datacenter_diff(spec, dc)),
            };
            let segs = ["datacenters", id.as_str()];
            self.record(ObjectKind::Datacenter, id.clone(), plan, || {
                api.put_json(&segs, spec)
            })
            .await?;
        }

        for (origin, text) in &inputs.zones {
            let current = api.zone_text(origin).await?;
            let plan = match &current {
                None => (Action::Create, format!("{} lines", text.lines().count())),
                Some(old) if old == text => (Action::Unchanged, String::new()),
                Some(old) => (Action::Replace, line_diff(old, text)),
            };
            let segs = ["zones", origin.as_str()];
            self.record(ObjectKind::Zone, origin.clone(), plan, || {
                api.put_text(&segs, text)
            })
            .await?;
        }

        // The settings the files give, and (pruning) the defaults for every other named zone.
        let mut settings: BTreeMap<&str, (&ZoneSettings, bool)> = inputs
            .zone_settings
            .iter()
            .map(|(o, s)| (o.as_str(), (s, false)))
            .collect();
        let default_settings = ZoneSettings::default();
        if self.options.prune {
            for origin in inputs.zones.keys() {
                settings
                    .entry(origin.as_str())
                    .or_insert((&default_settings, true));
            }
        }
        for (origin, (wanted, reset)) in settings {
            // A zone not there yet (a dry run that would create it) has the defaults.
            let current = api.zone_settings(origin).await?.unwrap_or_default();
            let same = normalised(&current) == normalised(wanted);
            let plan = if same {
                (Action::Unchanged, String::new())
            } else if reset {
                (Action::Replace, "reset to the defaults".to_string())
            } else if current == ZoneSettings::default() {
                (Action::Create, String::new())
            } else {
                (Action::Replace, settings_diff(&current, wanted))
            };
            if reset && same {
                continue; // not named by the files and nothing to reset: not worth a line
            }
            let segs = ["zones", origin, "settings"];
            self.record(ObjectKind::ZoneSettings, origin.to_string(), plan, || {
                api.put_json(&segs, wanted)
            })
            .await?;
        }

        for ((zone, name), spec) in &inputs.services {
            let current: Option<Service> = api
                .service(zone, name)
                .await?
                .map(|s| ServiceRead::to_service(&s));
            let plan = match &current {
                None => (Action::Create, String::new()),
                Some(svc) if spec.matches(svc) => (Action::Unchanged, String::new()),
                Some(svc) => (Action::Replace, service_diff(spec, svc)),
            };
            let segs = ["zones", zone.as_str(), "services", name.as_str()];
            self.record(
                ObjectKind::Service,
                format!("{name} in {zone}"),
                plan,
                || api.put_json(&segs, spec),
            )
            .await?;
        }

        if self.options.prune {
            self.prune(inputs).await?;
        }
        Ok(self.report)
    }

    /// Delete what the files do not name: services, then zones (a zone with services
    /// cannot go), then datacenters (one a service uses cannot go).
    async fn prune(&mut self, inputs: &Inputs) -> anyhow::Result<()> {
        let api = self.api;
        let zones = api.zones().await?;
        // Zones and datacenters a named service needs stay, named or not.
        let needed_zones: BTreeSet<&str> =
            inputs.services.keys().map(|(z, _)| z.as_str()).collect();
        let needed_dcs: BTreeSet<&str> = inputs
            .services
            .values()
            .flat_map(|s| {
                s.datacenters
                    .iter()
                    .chain(s.overrides.values().flatten())
                    .map(String::as_str)
            })
            .collect();
        for zone in &zones {
            for svc in api.services(zone).await? {
                let key = (zone.clone(), svc.name.clone());
                if inputs.services.contains_key(&key) {
                    continue;
                }
                let segs = ["zones", zone.as_str(), "services", svc.name.as_str()];
                let name = format!("{} in {zone}", svc.name);
                self.record(
                    ObjectKind::Service,
                    name,
                    (Action::Delete, String::new()),
                    || api.delete(&segs),
                )
                .await?;
            }
        }
        for zone in &zones {
            if inputs.zones.contains_key(zone) || needed_zones.contains(zone.as_str()) {
                continue;
            }
            let segs = ["zones", zone.as_str()];
            self.record(
                ObjectKind::Zone,
                zone.clone(),
                (Action::Delete, String::new()),
                || api.delete(&segs),
            )
            .await?;
        }
        for dc in api.datacenters().await? {
            if inputs.datacenters.contains_key(&dc.id) || needed_dcs.contains(dc.id.as_str()) {
                continue;
            }
            let segs = ["datacenters", dc.id.as_str()];
            self.record(
                ObjectKind::Datacenter,
                dc.id.clone(),
                (Action::Delete, String::new()),
                || api.delete(&segs),
            )
            .await?;
        }
        Ok(())
    }
}

/// Settings as the server keeps them (key names canonical, networks truncated), for
/// comparing; settings that do not normalise compare as written.
fn normalised(s: &ZoneSettings) -> ZoneSettings {
    s.normalised(|_| true).unwrap_or_else(|_| s.clone())
}

fn settings_diff(old: &ZoneSettings, new: &ZoneSettings) -> String {
    let (old, new) = (normalised(old), normalised(new));
    let mut fields = Vec::new();
    if old.allow_transfer != new.allow_transfer {
        fields.push("allow_transfer");
    }
    if old.notify != new.notify {
        fields.push("notify");
    }
    if old.notify_key != new.notify_key {
        fields.push("notify_key");
    }
    if old.allow_update != new.allow_update {
        fields.push("allow_update");
    }
    if old.serial != new.serial {
        fields.push("serial");
    }
    fields.join(", ")
}

fn datacenter_diff(spec: &DatacenterSpec, dc: &Datacenter) -> String {
    let mut fields = Vec::new();
    if spec.location != dc.location {
        fields.push("location".to_string());
    }
    if spec.addresses != dc.addresses {
        fields.push("addresses".to_string());
    }
    if spec.weight != dc.weight {
        fields.push(format!("weight {} -> {}", dc.weight, spec.weight));
    }
    if spec.health_check != dc.health_check {
        fields.push("health_check".to_string());
    }
    if let Some(state) = spec.state.filter(|s| *s != dc.state) {
        fields.push(format!("state {:?} -> {:?}", dc.state, state).to_ascii_lowercase());
    }
    fields.join(", ")
}

fn service_diff(spec: &ServiceSpec, svc: &Service) -> String {
    let mut fields = Vec::new();
    if spec.policy != svc.policy {
        fields.push("policy");
    }
    if spec.datacenters != svc.datacenters {
        fields.push("datacenters");
    }
    if spec.ttl != svc.ttl {
        fields.push("ttl");
    }
    if spec.answers != svc.answers {
        fields.push("answers");
    }
    if spec.overrides != svc.overrides {
        fields.push("overrides");
    }
    if spec.on_all_down != svc.on_all_down {
        fields.push("on_all_down");
    }
    fields.join(", ")
}

/// `12 -> 14 lines, +3 -1`: line counts, and lines only in the new / only in the old text.
fn line_diff(old: &str, new: &str) -> String {
    let mut counts: HashMap<&str, isize> = HashMap::new();
    for line in new.lines() {
        *counts.entry(line).or_default() += 1;
    }
    for line in old.lines() {
        *counts.entry(line).or_default() -= 1;
    }
    let added: isize = counts.values().filter(|n| **n > 0).sum();
    let removed: isize = -counts.values().filter(|n| **n < 0).sum::<isize>();
    format!(
        "{} -> {} lines, +{added} -{removed}",
        old.lines().count(),
        new.lines().count()
    )
}

// ---- reading the files --------------------------------------------------------------

/// Everything the files define, checked, keyed canonically.
#[derive(Debug, Default)]
struct Inputs {
    datacenters: BTreeMap<String, DatacenterSpec>,
    zones: BTreeMap<String, String>,
    services: BTreeMap<(String, String), ServiceSpec>,
    /// By canonical name; the algorithm in the API's spelling, the secret checked.
    tsig_keys: BTreeMap<String, TsigKeySpec>,
    /// By canonical origin.
    zone_settings: BTreeMap<String, ZoneSettings>,
    /// Where each object came from, for "defined twice" errors.
    sources: HashMap<(ObjectKind, String), String>,
}

/// A TOML file of definitions: `[[datacenter]]`, `[[service]]`, `[[zone]]` (settings)
/// and/or `[[key]]` (TSIG) tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionsFile {
    #[serde(default)]
    datacenter: Vec<Datacenter>,
    #[serde(default)]
    service: Vec<Service>,
    #[serde(default)]
    zone: Vec<ZoneSettingsEntry>,
    #[serde(default)]
    key: Vec<TsigKeySpec>,
}

/// The TOML files a directory is read for (besides `NAME.zone`).
const DIR_FILES: [&str; 4] = [
    "datacenters.toml",
    "services.toml",
    "zone-settings.toml",
    "tsig.toml",
];

impl Inputs {
    fn read(paths: &[PathBuf]) -> anyhow::Result<Inputs> {
        if paths.is_empty() {
            bail!(
                "nothing to apply: name zone files, datacenters.toml, services.toml, zone-settings.toml, tsig.toml or a directory"
            );
        }
        let mut inputs = Inputs::default();
        for path in paths {
            let meta = std::fs::metadata(path).with_context(|| path.display().to_string())?;
            if meta.is_dir() {
                inputs.read_dir(path)?;
            } else {
                inputs.read_file(path)?;
            }
        }
        Ok(inputs)
    }

    fn read_dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(dir).with_context(|| dir.display().to_string())?;
        for entry in entries {
            let path = entry.with_context(|| dir.display().to_string())?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let wanted =
                (name.ends_with(".zone") && !name.starts_with('.')) || DIR_FILES.contains(&name);
            if wanted && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        for file in files {
            self.read_file(&file)?;
        }
        Ok(())
    }

    fn read_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let file = path.display().to_string();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{file}: the file name is not valid UTF-8"))?;
        let text = std::fs::read_to_string(path).with_context(|| file.clone())?;
        if let Some(stem) = name.strip_suffix(".zone") {
            self.add_zone(&file, stem, text)
        } else if name.ends_with(".toml") {
            self.add_definitions(&file, &text)
        } else {
            bail!("{file}: not a NAME.zone file, datacenters.toml, services.toml, zone-settings.toml or tsig.toml")
        }
    }

    fn claim(&mut self, kind: ObjectKind, key: &str, file: &str) -> anyhow::Result<()> {
        if let Some(first) = self.sources.get(&(kind, key.to_string())) {
            bail!("{file}: {kind} {key} is already defined in {first}");
        }
        self.sources
            .insert((kind, key.to_string()), file.to_string());
        Ok(())
    }

    fn add_zone(&mut self, file: &str, stem: &str, text: String) -> anyhow::Result<()> {
        if stem.is_empty() {
            bail!("{file}: the file name is not of the form NAME.zone");
        }
        let origin = ZoneName::parse(stem)
            .map_err(|e| anyhow!("{file}: the file name does not name a zone: {e}"))?
            .to_string();
        let name = Name::from_ascii(&origin).map_err(|e| anyhow!("{file}: {e}"))?;
        crate::zone::parse_zone(&text, file, &name)?;
        self.claim(ObjectKind::Zone, &origin, file)?;
        self.zones.insert(origin, text);
        Ok(())
    }

    fn add_definitions(&mut self, file: &str, text: &str) -> anyhow::Result<()> {
        let parsed: DefinitionsFile = toml::from_str(text).map_err(|e| anyhow!("{file}: {e}"))?;
        // Which datacenter tables name a state (the typed form defaults it to active).
        let raw: toml::Value = toml::from_str(text).map_err(|e| anyhow!("{file}: {e}"))?;
        let names_state: Vec<bool> = raw
            .get("datacenter")
            .and_then(toml::Value::as_array)
            .map(|tables| tables.iter().map(|t| t.get("state").is_some()).collect())
            .unwrap_or_default();
        for (i, dc) in parsed.datacenter.iter().enumerate() {
            dc.validate().map_err(|e| anyhow!("{file}: {e}"))?;
            self.claim(ObjectKind::Datacenter, &dc.id, file)?;
            let with_state = names_state.get(i).copied().unwrap_or(false);
            let mut spec = DatacenterSpec::from_datacenter(dc, with_state);
            spec.id = None;
            self.datacenters.insert(dc.id.clone(), spec);
        }
        for svc in &parsed.service {
            let zone = ZoneName::parse(&svc.zone).map_err(|e| anyhow!("{file}: {e}"))?;
            let name = ServiceName::parse(&zone, &svc.name).map_err(|e| anyhow!("{file}: {e}"))?;
            let (zone, name) = (zone.to_string(), name.to_string());
            svc.validate(|_| true).map_err(|e| anyhow!("{file}: {e}"))?;
            self.claim(ObjectKind::Service, &format!("{name} in {zone}"), file)?;
            self.services
                .insert((zone, name), ServiceSpec::from_service(svc));
        }
        for key in &parsed.key {
            let Some(given) = key.name.as_deref() else {
                bail!("{file}: a [[key]] table has no name");
            };
            let name = KeyName::parse(given)
                .map_err(|e| anyhow!("{file}: {e}"))?
                .to_string();
            // An export leaves secrets empty: say so rather than send a key that cannot be.
            let checked = key
                .to_key(&name)
                .map_err(|e| anyhow!("{file}: TSIG key {name:?}: {e}"))?;
            self.claim(ObjectKind::TsigKey, &name, file)?;
            self.tsig_keys.insert(
                name,
                TsigKeySpec {
                    name: None,
                    algorithm: checked.algorithm.as_str().to_string(),
                    secret: key.secret.trim().to_string(),
                },
            );
        }
        for entry in &parsed.zone {
            let origin = ZoneName::parse(&entry.origin)
                .map_err(|e| anyhow!("{file}: {e}"))?
                .to_string();
            entry
                .settings
                .normalised(|_| true)
                .map_err(|e| anyhow!("{file}: zone {origin}: {e}"))?;
            self.claim(ObjectKind::ZoneSettings, &origin, file)?;
            self.zone_settings.insert(origin, entry.settings.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::test_api;
    use crate::model::DcState;

    const TOKEN: &str = "tok";
    const DRY: Options = Options {
        dry_run: true,
        prune: false,
        send_secrets: false,
    };
    const REAL: Options = Options {
        dry_run: false,
        prune: false,
        send_secrets: false,
    };
    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
    const DCS: &str = "[[datacenter]]\nid = \"lon\"\nlocation = { lat = 51.5, lon = -0.1 }\naddresses = [\"192.0.2.10\"]\n\n[[datacenter]]\nid = \"nyc\"\nlocation = { lat = 40.7, lon = -74.0 }\naddresses = [\"192.0.2.20\"]\nweight = 50\n";
    const SVCS: &str = "[[service]]\nzone = \"Example.com\"\nname = \"WWW\"\npolicy = \"geo_nearest\"\ndatacenters = [\"lon\", \"nyc\"]\n";

    /// Serve the admin API over a real one-node cluster on a loopback port.
    async fn serve() -> (String, crate::admin::testing::TestApi) {
        let t = test_api(Some(TOKEN)).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = t.router.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (format!("http://{addr}"), t)
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    #[tokio::test]
    async fn apply_is_idempotent_and_keeps_drains() {
        let (url, t) = serve().await;
        let dir = dir_with(&[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SVCS),
            ("node.toml", "not = [definitions"),
        ]);
        let paths = vec![dir.path().to_path_buf()];

        let dry = apply(&url, TOKEN, None, &paths, DRY)
            .await
            .expect("dry run");
        assert_eq!((dry.created(), dry.replaced(), dry.unchanged()), (4, 0, 0));
        assert!(t.cluster.state().is_empty(), "a dry run changes nothing");
        assert!(dry.to_string().contains("nothing was changed"), "{dry}");

        let first = apply(&url, TOKEN, None, &paths, REAL).await.expect("apply");
        assert_eq!(
            (first.created(), first.replaced(), first.unchanged()),
            (4, 0, 0)
        );
        let kinds: Vec<ObjectKind> = first.changes.iter().map(|c| c.kind).collect();
        use ObjectKind::*;
        assert_eq!(kinds, [Datacenter, Datacenter, Zone, Service]);
        let state = t.cluster.state();
        assert_eq!(&*state.zone("example.com.").expect("zone").text, ZONE);
        assert_eq!(state.datacenter("nyc").expect("nyc").dc.weight, 50);
        assert!(state.service("example.com.", "www").is_some());

        let again = apply(&url, &format!(" {TOKEN}\n"), None, &paths, REAL)
            .await
            .expect("again");
        assert_eq!(
            (again.created(), again.replaced(), again.unchanged()),
            (0, 0, 4),
            "{again}"
        );
        assert!(!again.changed());

        // A drain made through the API survives re-applying definitions without a state.
        let drain = crate::cluster::Request::new(crate::cluster::Command::PatchDatacenter {
            id: "lon".into(),
            weight: None,
            state: Some(DcState::Drained),
        })
        .by("test");
        t.cluster.propose(drain).await.expect("drained");
        let dcs = DCS.replace("weight = 50", "weight = 60");
        let zone = format!("{ZONE}www2 IN A 192.0.2.2\n");
        let dir2 = dir_with(&[("example.com.zone", &zone), ("datacenters.toml", &dcs)]);
        let r = apply(&url, TOKEN, None, &[dir2.path().to_path_buf()], REAL)
            .await
            .expect("apply");
        assert_eq!((r.created(), r.replaced(), r.unchanged()), (0, 2, 1), "{r}");
        let text = r.to_string();
        assert!(text.contains("weight 50 -> 60"), "{text}");
        assert!(text.contains("4 -> 5 lines, +1 -0"), "{text}");
        let state = t.cluster.state();
        assert_eq!(
            state.datacenter("lon").expect("lon").dc.state,
            DcState::Drained
        );
        assert_eq!(state.datacenter("nyc").expect("nyc").dc.weight, 60);

        // A file that names the state does set it.
        let dcs = DCS.replacen(
            "addresses = [\"192.0.2.10\"]",
            "addresses = [\"192.0.2.10\"]\nstate = \"active\"",
            1,
        );
        let f = dir_with(&[("dcs.toml", &dcs)]);
        let r = apply(&url, TOKEN, None, &[f.path().join("dcs.toml")], REAL)
            .await
            .expect("apply");
        assert_eq!((r.replaced(), r.unchanged()), (2, 0), "{r}");
        assert!(r.to_string().contains("state drained -> active"), "{r}");
        assert_eq!(
            t.cluster.state().datacenter("lon").expect("lon").dc.state,
            DcState::Active
        );
    }

    #[tokio::test]
    async fn server_errors_carry_the_servers_message() {
        let (url, _t) = serve().await;
        let dir = dir_with(&[("example.com.zone", ZONE)]);
        let e = apply(&url, "wrong", None, &[dir.path().to_path_buf()], REAL)
            .await
            .expect_err("wrong token");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("401") && msg.contains("wrong admin token"),
            "{msg}"
        );
        // A service on an unknown datacenter: 422 from the server.
        let svcs = dir_with(&[("example.com.zone", ZONE), ("services.toml", SVCS)]);
        let e = apply(&url, TOKEN, None, &[svcs.path().to_path_buf()], REAL)
            .await
            .expect_err("unknown datacenter");
        let msg = format!("{e:#}");
        assert!(msg.contains("422") && msg.contains("lon"), "{msg}");
        assert!(msg.contains("after 1 created"), "{msg}");
    }

    #[tokio::test]
    async fn local_errors_come_before_any_request() {
        let bad_zone = dir_with(&[("example.com.zone", "@ IN SOA broken\n")]);
        let e = apply(
            "http://127.0.0.1:9",
            TOKEN,
            None,
            &[bad_zone.path().to_path_buf()],
            REAL,
        )
        .await
        .expect_err("bad zone");
        assert!(format!("{e:#}").contains("example.com.zone:1"), "{e:#}");
        let twice = dir_with(&[("a.toml", DCS), ("b.toml", DCS)]);
        let e = apply(
            "http://127.0.0.1:9",
            TOKEN,
            None,
            &[twice.path().join("a.toml"), twice.path().join("b.toml")],
            DRY,
        )
        .await
        .expect_err("twice");
        assert!(format!("{e:#}").contains("already defined"), "{e:#}");
        let other = dir_with(&[("notes.txt", "hi")]);
        assert!(apply(
            "127.0.0.1:9",
            TOKEN,
            None,
            &[other.path().join("notes.txt")],
            DRY
        )
        .await
        .is_err());
        assert!(apply("127.0.0.1:9", TOKEN, None, &[], DRY).await.is_err());
    }

    /// Settings and keys are applied; pruning resets the settings the files no longer give
    /// and deletes what they no longer name, a dry run only listing it.
    #[tokio::test]
    async fn settings_keys_and_prune() {
        let (url, t) = serve().await;
        let key = "[[key]]\nname = \"XFR.\"\nalgorithm = \"hmac-sha256\"\nsecret = \"c2VjcmV0\"\n";
        let settings =
            "[[zone]]\norigin = \"example.com\"\nallow_transfer = [\"key:xfr\", \"::1\"]\n";
        let full = dir_with(&[
            ("example.com.zone", ZONE),
            ("other.test.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SVCS),
            ("tsig.toml", key),
            ("zone-settings.toml", settings),
        ]);
        let paths = vec![full.path().to_path_buf()];
        let r = apply(&url, TOKEN, None, &paths, REAL).await.expect("apply");
        assert_eq!(r.created(), 7, "{r}");
        let state = t.cluster.state();
        assert!(state.tsig_key("xfr").is_some());
        let s = state.zone_settings("example.com.").expect("settings");
        assert_eq!(s.settings.allow_transfer, ["key:xfr", "::1/128"]);
        let again = apply(&url, TOKEN, None, &paths, REAL).await.expect("again");
        assert!(!again.changed(), "{again}");
        assert!(again.to_string().contains("secret not compared"), "{again}");
        let resend = Options {
            send_secrets: true,
            ..REAL
        };
        let r = apply(&url, TOKEN, None, &paths, resend)
            .await
            .expect("resend");
        assert_eq!(r.replaced(), 1, "{r}");

        // The files now name one zone, no service, no settings, one datacenter.
        let dcs = DCS.split("\n\n").next().expect("lon").to_string();
        let less = dir_with(&[("example.com.zone", ZONE), ("datacenters.toml", &dcs)]);
        let paths = vec![less.path().to_path_buf()];
        let prune = Options { prune: true, ..DRY };
        let dry = apply(&url, TOKEN, None, &paths, prune).await.expect("dry");
        let lines: Vec<String> = dry
            .changes
            .iter()
            .filter(|c| c.action != Action::Unchanged)
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "replace   zone-settings example.com. (reset to the defaults)",
                "delete    service www in example.com.",
                "delete    zone other.test.",
                "delete    datacenter nyc",
            ],
            "{dry}"
        );
        assert!(
            dry.to_string().contains("1 to replace, 3 to delete"),
            "{dry}"
        );
        assert!(t.cluster.state().zone("other.test.").is_some());
        let prune = Options {
            prune: true,
            ..REAL
        };
        let r = apply(&url, TOKEN, None, &paths, prune)
            .await
            .expect("prune");
        assert_eq!((r.replaced(), r.deleted()), (1, 3), "{r}");
        let state = t.cluster.state();
        assert!(state.zone("other.test.").is_none());
        assert!(state.datacenter("nyc").is_none());
        assert!(state.service("example.com.", "www").is_none());
        assert_eq!(
            *state
                .zone_settings("example.com.")
                .expect("settings")
                .settings,
            ZoneSettings::default()
        );
        assert!(state.tsig_key("xfr").is_some(), "keys are never pruned");
    }

    #[tokio::test]
    async fn an_empty_tsig_secret_is_refused_before_any_request() {
        let d = dir_with(&[(
            "tsig.toml",
            "[[key]]\nname = \"k\"\nalgorithm = \"hmac-sha256\"\nsecret = \"\"\n",
        )]);
        let e = apply(
            "http://127.0.0.1:9",
            TOKEN,
            None,
            &[d.path().to_path_buf()],
            DRY,
        )
        .await
        .expect_err("empty secret");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("tsig.toml") && msg.contains("fill in"),
            "{msg}"
        );
    }
}
