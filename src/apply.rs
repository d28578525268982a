//! `meridian apply --admin URL --token TOKEN PATH…`: push zone files and the bootstrap TOML
//! files through the admin API.
//!
//! A PATH is a file or a directory. In a directory, every `NAME.zone` (origin `NAME`),
//! `datacenters.toml` (`[[datacenter]]` with `id`) and `services.toml` (`[[service]]` with
//! `zone` and `name`) is read; named explicitly, a `.zone` file is a zone and a `.toml` file
//! may hold `[[datacenter]]` and `[[service]]` tables. Everything is checked locally first;
//! then datacenters, zones and services are sent in that order, each only when it differs
//! from what the cluster has (a `GET` first), so applying twice changes nothing. A
//! datacenter's `state` is sent only when its table names one: re-applying definitions never
//! undoes a drain. Objects the files do not name are left alone. `--dry-run` reports what
//! would change and sends nothing but `GET`s.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hickory_proto::rr::Name;
use reqwest::{header, Method, StatusCode, Url};
use serde::Deserialize;

use crate::admin::{DatacenterSpec, ErrorBody, ServiceSpec};
use crate::cluster::state::{canonical_service, canonical_zone};
use crate::model::{Datacenter, Service};

/// What kind of object a change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Datacenter,
    Zone,
    Service,
}

/// What applying did (or, in a dry run, would do) to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Replace,
    Unchanged,
}

/// One object of the files and its fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ObjectKind,
    /// `lon`, `example.com.`, `www in example.com.`
    pub name: String,
    pub action: Action,
    /// What differs (empty when created or unchanged).
    pub detail: String,
}

/// Every object of the files, in the order applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub dry_run: bool,
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

    pub fn unchanged(&self) -> usize {
        self.count(Action::Unchanged)
    }

    /// Whether anything was (or would be) changed.
    pub fn changed(&self) -> bool {
        self.created() + self.replaced() > 0
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Datacenter => "datacenter",
            ObjectKind::Zone => "zone",
            ObjectKind::Service => "service",
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.action {
            Action::Create => "create",
            Action::Replace => "replace",
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
        let (c, r, u) = (self.created(), self.replaced(), self.unchanged());
        if self.dry_run {
            write!(
                f,
                "dry run: {c} to create, {r} to replace, {u} unchanged; nothing was changed"
            )
        } else {
            write!(f, "{c} created, {r} replaced, {u} unchanged")
        }
    }
}

/// Push `paths` to the admin API at `admin` (`http://host:port`, with or without
/// `/api/v1`). Stops at the first error, which carries the server's message.
pub async fn apply(
    admin: &str,
    token: &str,
    paths: &[PathBuf],
    dry_run: bool,
) -> anyhow::Result<ApplyReport> {
    apply_with_ca(admin, token, paths, dry_run, None).await
}

/// [`apply`] to an HTTPS admin API whose certificate chains to the CA in `cacert` (PEM; only
/// that CA is trusted) and names the URL's host.
pub async fn apply_with_ca(
    admin: &str,
    token: &str,
    paths: &[PathBuf],
    dry_run: bool,
    cacert: Option<&Path>,
) -> anyhow::Result<ApplyReport> {
    let inputs = Inputs::read(paths)?;
    let api = Api::new(admin, token, cacert)?;
    let mut report = ApplyReport {
        dry_run,
        changes: Vec::new(),
    };
    let progress = |report: &ApplyReport| {
        format!(
            "after {} created and {} replaced",
            report.created(),
            report.replaced()
        )
    };

    for (id, spec) in &inputs.datacenters {
        let segs = ["datacenters", id.as_str()];
        let current: Option<Datacenter> = api
            .get_json::<DatacenterSpec>(&segs)
            .await?
            .map(|current| current.to_datacenter(id).0);
        let (action, detail) = match &current {
            None => (Action::Create, String::new()),
            Some(dc) if spec.matches(dc) => (Action::Unchanged, String::new()),
            Some(dc) => (Action::Replace, datacenter_diff(spec, dc)),
        };
        if action != Action::Unchanged && !dry_run {
            api.put_json(&segs, spec)
                .await
                .with_context(|| progress(&report))?;
        }
        report.changes.push(Change {
            kind: ObjectKind::Datacenter,
            name: id.clone(),
            action,
            detail,
        });
    }

    for (origin, text) in &inputs.zones {
        let segs = ["zones", origin.as_str()];
        let current = api.get_text(&segs).await?;
        let (action, detail) = match &current {
            None => (Action::Create, format!("{} lines", text.lines().count())),
            Some(old) if old == text => (Action::Unchanged, String::new()),
            Some(old) => (Action::Replace, line_diff(old, text)),
        };
        if action != Action::Unchanged && !dry_run {
            api.put_text(&segs, text)
                .await
                .with_context(|| progress(&report))?;
        }
        report.changes.push(Change {
            kind: ObjectKind::Zone,
            name: origin.clone(),
            action,
            detail,
        });
    }

    for ((zone, name), spec) in &inputs.services {
        let segs = ["zones", zone.as_str(), "services", name.as_str()];
        // The service as the API shows it, without its `version`.
        let current: Option<Service> = match api.get_json::<serde_json::Value>(&segs).await? {
            Some(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("version");
                }
                Some(serde_json::from_value(v)?)
            }
            None => None,
        };
        let (action, detail) = match &current {
            None => (Action::Create, String::new()),
            Some(svc) if spec.matches(svc) => (Action::Unchanged, String::new()),
            Some(svc) => (Action::Replace, service_diff(spec, svc)),
        };
        if action != Action::Unchanged && !dry_run {
            api.put_json(&segs, spec)
                .await
                .with_context(|| progress(&report))?;
        }
        report.changes.push(Change {
            kind: ObjectKind::Service,
            name: format!("{name} in {zone}"),
            action,
            detail,
        });
    }
    Ok(report)
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
    /// Where each object came from, for "defined twice" errors.
    sources: HashMap<(ObjectKind, String), String>,
}

/// A TOML file of definitions: `[[datacenter]]` and/or `[[service]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionsFile {
    #[serde(default)]
    datacenter: Vec<Datacenter>,
    #[serde(default)]
    service: Vec<Service>,
}

impl Inputs {
    fn read(paths: &[PathBuf]) -> anyhow::Result<Inputs> {
        if paths.is_empty() {
            bail!(
                "nothing to apply: name zone files, datacenters.toml, services.toml or a directory"
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
            let wanted = (name.ends_with(".zone") && !name.starts_with('.'))
                || name == "datacenters.toml"
                || name == "services.toml";
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
            bail!("{file}: not a NAME.zone file, datacenters.toml or services.toml")
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
        let origin = canonical_zone(stem).map_err(|e| {
            anyhow!(
                "{file}: the file name does not name a zone: {}",
                e.message()
            )
        })?;
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
            let zone = canonical_zone(&svc.zone).map_err(|e| anyhow!("{file}: {}", e.message()))?;
            let name = canonical_service(&zone, &svc.name)
                .map_err(|e| anyhow!("{file}: {}", e.message()))?;
            svc.validate(|_| true).map_err(|e| anyhow!("{file}: {e}"))?;
            self.claim(ObjectKind::Service, &format!("{name} in {zone}"), file)?;
            self.services
                .insert((zone, name), ServiceSpec::from_service(svc));
        }
        Ok(())
    }
}

// ---- explain --admin -------------------------------------------------------------------

/// `meridian explain --admin URL NAME TYPE CLIENT`: a live node's `GET /explain` (its
/// current state, not files). `token` is needed only where reads need one.
pub async fn explain_remote(
    admin: &str,
    token: Option<&str>,
    cacert: Option<&Path>,
    name: &str,
    qtype: &str,
    client: std::net::IpAddr,
) -> anyhow::Result<crate::explain::Explanation> {
    let api = Api::new(admin, token.unwrap_or(""), cacert)?;
    let mut url = api.url(&["explain"]);
    url.query_pairs_mut()
        .append_pair("name", name)
        .append_pair("type", qtype)
        .append_pair("client", &client.to_string());
    let mut req = api.client.get(url.clone());
    if !api.token.is_empty() {
        req = req.bearer_auth(&api.token);
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("GET {url}: reading the answer"))?;
    if status != StatusCode::OK {
        return Err(Api::failure(&Method::GET, &url, status, &body));
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("GET {}: the answer is not an explanation", url.path()))
}

// ---- the HTTP side ------------------------------------------------------------------

struct Api {
    client: reqwest::Client,
    base: Url,
    token: String,
}

impl Api {
    fn new(admin: &str, token: &str, cacert: Option<&Path>) -> anyhow::Result<Api> {
        let admin = admin.trim();
        let with_scheme = if admin.contains("://") {
            admin.to_string()
        } else {
            format!("http://{admin}")
        };
        let mut base =
            Url::parse(&with_scheme).with_context(|| format!("bad admin URL {admin:?}"))?;
        if base.cannot_be_a_base() {
            bail!("bad admin URL {admin:?}");
        }
        let path = base.path().trim_end_matches('/').to_string();
        let path = if path.ends_with("/api/v1") {
            path
        } else {
            format!("{path}/api/v1")
        };
        base.set_path(&path);
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy();
        let client = crate::tls::trust_only(builder, cacert)?
            .build()
            .context("the HTTP client could not be built")?;
        Ok(Api {
            client,
            base,
            token: token.trim().to_string(),
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let url = self.url(segments);
        let mut req = self.client.request(method.clone(), url.clone());
        // A read may go without a token (`explain --admin` on an open node).
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header(header::CONTENT_TYPE, content_type).body(bytes);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        Ok((status, bytes.to_vec()))
    }

    fn failure(method: &Method, url: &Url, status: StatusCode, body: &[u8]) -> anyhow::Error {
        let message = serde_json::from_slice::<ErrorBody>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string());
        anyhow!("{method} {}: {status}: {message}", url.path())
    }

    /// `None` on 404.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> anyhow::Result<Option<T>> {
        match self.get(segments).await? {
            None => Ok(None),
            Some(body) => serde_json::from_slice(&body).map(Some).with_context(|| {
                format!(
                    "GET {}: the answer is not what was expected",
                    self.url(segments).path()
                )
            }),
        }
    }

    async fn get_text(&self, segments: &[&str]) -> anyhow::Result<Option<String>> {
        Ok(self
            .get(segments)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn get(&self, segments: &[&str]) -> anyhow::Result<Option<Vec<u8>>> {
        let (status, body) = self.send(Method::GET, segments, None).await?;
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::failure(
                &Method::GET,
                &self.url(segments),
                status,
                &body,
            )),
        }
    }

    async fn put_json<T: serde::Serialize>(
        &self,
        segments: &[&str],
        value: &T,
    ) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(value)?;
        self.put(segments, ("application/json", bytes)).await
    }

    async fn put_text(&self, segments: &[&str], text: &str) -> anyhow::Result<()> {
        self.put(segments, ("text/dns", text.as_bytes().to_vec()))
            .await
    }

    async fn put(&self, segments: &[&str], body: (&'static str, Vec<u8>)) -> anyhow::Result<()> {
        let (status, answer) = self.send(Method::PUT, segments, Some(body)).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Self::failure(
                &Method::PUT,
                &self.url(segments),
                status,
                &answer,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::test_api;
    use crate::model::DcState;

    const TOKEN: &str = "tok";
    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
    const DCS: &str = "[[datacenter]]\nid = \"lon\"\nlocation = { lat = 51.5, lon = -0.1 }\naddresses = [\"192.0.2.10\"]\n\n[[datacenter]]\nid = \"nyc\"\nlocation = { lat = 40.7, lon = -74.0 }\naddresses = [\"192.0.2.20\"]\nweight = 50\n";
    const SVCS: &str = "[[service]]\nzone = \"Example.com\"\nname = \"WWW\"\npolicy = \"geo_nearest\"\ndatacenters = [\"lon\", \"nyc\"]\n";

    /// Serve the admin API over a fake cluster on a loopback port.
    async fn serve() -> (String, crate::admin::testing::TestApi) {
        let t = test_api(Some(TOKEN));
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

        let dry = apply(&url, TOKEN, &paths, true).await.expect("dry run");
        assert_eq!((dry.created(), dry.replaced(), dry.unchanged()), (4, 0, 0));
        assert!(
            t.cluster.state.load().is_empty(),
            "a dry run changes nothing"
        );
        assert!(dry.to_string().contains("nothing was changed"), "{dry}");

        let first = apply(&url, TOKEN, &paths, false).await.expect("apply");
        assert_eq!(
            (first.created(), first.replaced(), first.unchanged()),
            (4, 0, 0)
        );
        let kinds: Vec<ObjectKind> = first.changes.iter().map(|c| c.kind).collect();
        use ObjectKind::*;
        assert_eq!(kinds, [Datacenter, Datacenter, Zone, Service]);
        let state = t.cluster.state.load_full();
        assert_eq!(&*state.zone("example.com.").expect("zone").text, ZONE);
        assert_eq!(state.datacenter("nyc").expect("nyc").dc.weight, 50);
        assert!(state.service("example.com.", "www").is_some());

        let again = apply(&url, &format!(" {TOKEN}\n"), &paths, false)
            .await
            .expect("again");
        assert_eq!(
            (again.created(), again.replaced(), again.unchanged()),
            (0, 0, 4),
            "{again}"
        );
        assert!(!again.changed());

        // A drain made through the API survives re-applying definitions without a state.
        let mut drained = (*t.cluster.state.load_full()).clone();
        drained.apply(
            &crate::cluster::Command::PatchDatacenter {
                id: "lon".into(),
                weight: None,
                state: Some(DcState::Drained),
            },
            None,
            0,
            1,
        );
        t.cluster.state.store(std::sync::Arc::new(drained));
        let dcs = DCS.replace("weight = 50", "weight = 60");
        let zone = format!("{ZONE}www2 IN A 192.0.2.2\n");
        let dir2 = dir_with(&[("example.com.zone", &zone), ("datacenters.toml", &dcs)]);
        let r = apply(&url, TOKEN, &[dir2.path().to_path_buf()], false)
            .await
            .expect("apply");
        assert_eq!((r.created(), r.replaced(), r.unchanged()), (0, 2, 1), "{r}");
        let text = r.to_string();
        assert!(text.contains("weight 50 -> 60"), "{text}");
        assert!(text.contains("4 -> 5 lines, +1 -0"), "{text}");
        let state = t.cluster.state.load_full();
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
        let r = apply(&url, TOKEN, &[f.path().join("dcs.toml")], false)
            .await
            .expect("apply");
        assert_eq!((r.replaced(), r.unchanged()), (2, 0), "{r}");
        assert!(r.to_string().contains("state drained -> active"), "{r}");
        assert_eq!(
            t.cluster
                .state
                .load()
                .datacenter("lon")
                .expect("lon")
                .dc
                .state,
            DcState::Active
        );
    }

    #[tokio::test]
    async fn server_errors_carry_the_servers_message() {
        let (url, _t) = serve().await;
        let dir = dir_with(&[("example.com.zone", ZONE)]);
        let e = apply(&url, "wrong", &[dir.path().to_path_buf()], false)
            .await
            .expect_err("wrong token");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("401") && msg.contains("wrong admin token"),
            "{msg}"
        );
        // A service on an unknown datacenter: 422 from the server.
        let svcs = dir_with(&[("example.com.zone", ZONE), ("services.toml", SVCS)]);
        let e = apply(&url, TOKEN, &[svcs.path().to_path_buf()], false)
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
            &[bad_zone.path().to_path_buf()],
            false,
        )
        .await
        .expect_err("bad zone");
        assert!(format!("{e:#}").contains("example.com.zone:1"), "{e:#}");
        let twice = dir_with(&[("a.toml", DCS), ("b.toml", DCS)]);
        let e = apply(
            "http://127.0.0.1:9",
            TOKEN,
            &[twice.path().join("a.toml"), twice.path().join("b.toml")],
            true,
        )
        .await
        .expect_err("twice");
        assert!(format!("{e:#}").contains("already defined"), "{e:#}");
        let other = dir_with(&[("notes.txt", "hi")]);
        assert!(apply(
            "127.0.0.1:9",
            TOKEN,
            &[other.path().join("notes.txt")],
            true
        )
        .await
        .is_err());
        assert!(apply("127.0.0.1:9", TOKEN, &[], true).await.is_err());
    }

    #[test]
    fn admin_urls_are_normalised() {
        for admin in [
            "127.0.0.1:8053",
            "http://127.0.0.1:8053",
            "http://127.0.0.1:8053/",
            "http://127.0.0.1:8053/api/v1/",
        ] {
            let api = Api::new(admin, TOKEN, None).expect("url");
            assert_eq!(
                api.url(&["zones", "example.com."]).as_str(),
                "http://127.0.0.1:8053/api/v1/zones/example.com.",
                "{admin}"
            );
        }
        let api = Api::new("http://h:1/prefix", TOKEN, None).expect("url");
        assert_eq!(
            api.url(&["zones", "x", "services", "@"]).as_str(),
            "http://h:1/prefix/api/v1/zones/x/services/@"
        );
    }
}
