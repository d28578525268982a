//! `GET /metrics`: a prometheus-client registry built at each scrape from what the node
//! already holds: the current snapshot (its query and answer counters, datacenters and
//! age), the Raft status, and this node's probe statistics. Nothing is counted here.
//!
//! Prometheus text (0.0.4) by default; OpenMetrics when the scraper's `Accept` asks for it.

use std::fmt;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Extension;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::admin::App;
use crate::cluster::ClusterStatus;
use crate::health::{ProbeStats, LATENCY_BUCKETS_MS};
use crate::model::{DcState, Health};
use crate::snapshot::Snapshot;

/// This node's probe statistics (the health prober's), read at each scrape.
pub type ProbeStatsFn = Arc<dyn Fn() -> Vec<ProbeStats> + Send + Sync>;

/// The prober's statistics as a request extension (absent: no probe metrics).
#[derive(Clone)]
pub(crate) struct Probes(pub ProbeStatsFn);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) async fn metrics(
    State(app): State<Arc<App>>,
    probes: Option<Extension<Probes>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let scrape = Scrape {
        ready: app.ready.is_ready(),
        status: app.cluster.status(),
        snap: Arc::clone(&app.reader.load()),
        probes: probes.map(|Extension(p)| (p.0)()).unwrap_or_default(),
        dnstap: crate::dnstap::stats(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let mut out = String::new();
    let (content_type, encoded) = if openmetrics {
        (
            OPENMETRICS,
            prometheus_client::encoding::text::encode(&mut out, &registry),
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        )
    };
    if let Err(e) = encoded {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    ([(header::CONTENT_TYPE, content_type)], out)
}

/// Everything one scrape shows, read once.
#[derive(Debug)]
struct Scrape {
    ready: bool,
    status: ClusterStatus,
    snap: Arc<Snapshot>,
    probes: Vec<ProbeStats>,
    dnstap: crate::dnstap::Stats,
}

type Res = Result<(), fmt::Error>;

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeGaugeValue,
) -> Res {
    enc.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn labeled_gauge(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: i64) -> Res {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn labeled_counter(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> Res {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Res {
        let (snap, status) = (&self.snap, &self.status);
        gauge(&mut enc, "meridian_up", "The node is running.", None, 1u64)?;
        gauge(
            &mut enc,
            "meridian_ready",
            "The node serves DNS with its state loaded.",
            None,
            u64::from(self.ready),
        )?;
        gauge(
            &mut enc,
            "meridian_snapshot_generation",
            "Generation of the snapshot the data plane answers from.",
            None,
            snap.generation,
        )?;
        gauge(
            &mut enc,
            "meridian_snapshot_age",
            "Seconds since the snapshot the data plane answers from was published.",
            Some(&Unit::Seconds),
            snap.published_at.elapsed().as_secs_f64(),
        )?;
        gauge(
            &mut enc,
            "meridian_geoip_build_epoch",
            "Build time (Unix seconds) of the GeoIP database.",
            None,
            snap.geo.build_epoch(),
        )?;
        gauge(
            &mut enc,
            "meridian_raft_term",
            "Current Raft term.",
            None,
            status.term,
        )?;
        gauge(
            &mut enc,
            "meridian_raft_leader",
            "Id of the current Raft leader (0: none known).",
            None,
            status.leader.unwrap_or(0),
        )?;
        gauge(
            &mut enc,
            "meridian_raft_is_leader",
            "This node is the Raft leader.",
            None,
            u64::from(status.leader == Some(status.node_id)),
        )?;
        gauge(
            &mut enc,
            "meridian_raft_quorum",
            "1 when this node has a quorum: as the leader, a majority answered within the election timeout; as a follower, it hears from a leader.",
            None,
            u64::from(status.quorum),
        )?;
        gauge(
            &mut enc,
            "meridian_cluster_format",
            "The cluster's format: the newest log entry format every member applies (writes needing a newer one wait for the rolling upgrade to finish).",
            None,
            u64::from(status.format),
        )?;
        gauge(
            &mut enc,
            "meridian_raft_last_applied",
            "Index of the last log entry applied on this node.",
            None,
            status.last_applied.unwrap_or(0),
        )?;
        gauge(
            &mut enc,
            "meridian_raft_last_log_index",
            "Index of the last log entry this node holds.",
            None,
            status.last_log_index.unwrap_or(0),
        )?;
        gauge(
            &mut enc,
            "meridian_raft_members",
            "Members of the cluster.",
            None,
            status.members.len() as u64,
        )?;
        self.queries(&mut enc)?;
        let rrl = crate::metrics::rrl();
        enc.encode_descriptor(
            "meridian_rrl_dropped",
            "UDP replies response rate limiting dropped.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&rrl.dropped.sum(), None)?;
        enc.encode_descriptor(
            "meridian_rrl_slipped",
            "UDP replies response rate limiting sent truncated instead (slipped).",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&rrl.slipped.sum(), None)?;
        self.datacenters(&mut enc)?;
        self.probes(&mut enc)?;
        self.fail_open(&mut enc)?;
        self.dnstap(&mut enc)
    }
}

impl Scrape {
    /// Queries by zone, qtype, rcode and policy: only combinations seen, only for zones
    /// of the snapshot (and `-` for no zone).
    fn queries(&self, enc: &mut DescriptorEncoder<'_>) -> Res {
        let counters = &self.snap.counters;
        let mut m = enc.encode_descriptor(
            "meridian_queries",
            "DNS queries answered, by zone (\"-\": none of ours), query type, response code and the service policy that picked the answer (\"none\": no service).",
            None,
            MetricType::Counter,
        )?;
        let zones = counters
            .zones
            .iter()
            .map(|(origin, stats)| (origin.as_str(), stats))
            .chain([("-", &counters.no_zone)]);
        for (zone, stats) in zones {
            let mut res = Ok(());
            stats.for_each(|qtype, rcode, policy, n| {
                if res.is_ok() {
                    let labels = [
                        ("zone", zone),
                        ("qtype", qtype),
                        ("rcode", rcode),
                        ("policy", policy),
                    ];
                    res = labeled_counter(&mut m, &labels, n);
                }
            });
            res?;
        }
        Ok(())
    }

    /// Per datacenter of the snapshot: answers that carried its addresses, its health (the
    /// cluster's verdict), its state and its weight.
    fn datacenters(&self, enc: &mut DescriptorEncoder<'_>) -> Res {
        let snap = &self.snap;
        let dcs = &snap.dcs.entries;
        let mut m = enc.encode_descriptor(
            "meridian_datacenter_answers",
            "Answers that carried this datacenter's addresses.",
            None,
            MetricType::Counter,
        )?;
        for (e, c) in dcs.iter().zip(snap.counters.dc_answers.iter()) {
            if !e.live {
                continue;
            }
            labeled_counter(&mut m, &[("datacenter", e.def.id.as_str())], c.sum())?;
        }
        let mut m = enc.encode_descriptor(
            "meridian_datacenter_health",
            "The cluster's health verdict on a datacenter: 1 for its current one.",
            None,
            MetricType::Gauge,
        )?;
        for e in dcs.iter().filter(|e| e.live) {
            for (h, name) in [
                (Health::Healthy, "healthy"),
                (Health::Unhealthy, "unhealthy"),
                (Health::Unknown, "unknown"),
            ] {
                let labels = [("datacenter", e.def.id.as_str()), ("health", name)];
                labeled_gauge(&mut m, &labels, i64::from(e.def.health == h))?;
            }
        }
        let mut m = enc.encode_descriptor(
            "meridian_datacenter_state",
            "A datacenter's administrative state: 1 for its current one.",
            None,
            MetricType::Gauge,
        )?;
        for e in dcs.iter().filter(|e| e.live) {
            for (s, name) in [(DcState::Active, "active"), (DcState::Drained, "drained")] {
                let labels = [("datacenter", e.def.id.as_str()), ("state", name)];
                labeled_gauge(&mut m, &labels, i64::from(e.def.state == s))?;
            }
        }
        let mut m = enc.encode_descriptor(
            "meridian_datacenter_weight",
            "A datacenter's weight (weighted services).",
            None,
            MetricType::Gauge,
        )?;
        for e in dcs.iter().filter(|e| e.live) {
            let labels = [("datacenter", e.def.id.as_str())];
            labeled_gauge(&mut m, &labels, i64::from(e.def.weight))?;
        }
        Ok(())
    }

    /// Per service: whether it fails open now (no eligible datacenter: it answers with all).
    fn fail_open(&self, enc: &mut DescriptorEncoder<'_>) -> Res {
        let mut m = enc.encode_descriptor(
            "meridian_service_fail_open",
            "1 while a service fails open: none of its datacenters is eligible (drained, unhealthy, or weight 0 for weighted), so it answers with all of them.",
            None,
            MetricType::Gauge,
        )?;
        for plan in self.snap.plans.iter().flatten() {
            let (zone, name) = (&plan.service.zone, &plan.service.name);
            let on = crate::policy::fails_open(plan, &self.snap.dcs);
            let labels = [("zone", zone.as_str()), ("service", name.as_str())];
            labeled_gauge(&mut m, &labels, i64::from(on))?;
        }
        Ok(())
    }

    /// The dnstap query log: events dropped, and the socket reader's connection.
    fn dnstap(&self, enc: &mut DescriptorEncoder<'_>) -> Res {
        enc.encode_descriptor(
            "meridian_dnstap_dropped",
            "Queries not written to the dnstap log (its queue was full, no reader was connected, or the output failed).",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&self.dnstap.dropped, None)?;
        enc.encode_descriptor(
            "meridian_dnstap_written",
            "Queries written to the dnstap log (flushed to the file or the socket reader).",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&self.dnstap.written, None)?;
        enc.encode_descriptor(
            "meridian_dnstap_connections",
            "Frame Streams handshakes completed with the dnstap socket reader.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&self.dnstap.connections, None)?;
        gauge(
            enc,
            "meridian_dnstap_connected",
            "A dnstap socket reader is connected.",
            None,
            u64::from(self.dnstap.connected),
        )
    }

    /// This node's own probes: latency histogram, failures, verdict.
    fn probes(&self, enc: &mut DescriptorEncoder<'_>) -> Res {
        let mut m = enc.encode_descriptor(
            "meridian_health_probe_duration",
            "Latency of this node's health probes (failed ones included).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for p in &self.probes {
            let labels = [("datacenter", p.dc.as_str()), ("kind", p.kind)];
            // Non-cumulative counts, as the encoder wants them; the last bucket is +Inf.
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MS
                .iter()
                .map(|ms| ms / 1000.0)
                .chain([f64::INFINITY])
                .zip(p.latency_buckets)
                .collect();
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                p.latency_sum_ms / 1000.0,
                p.probes,
                &buckets,
                None,
            )?;
        }
        let mut m = enc.encode_descriptor(
            "meridian_health_probe_failures",
            "This node's failed health probes.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.probes {
            let labels = [("datacenter", p.dc.as_str()), ("kind", p.kind)];
            labeled_counter(&mut m, &labels, p.failures)?;
        }
        let mut m = enc.encode_descriptor(
            "meridian_health_probe_up",
            "This node's own verdict on a datacenter (1 up, 0 down; absent until rise or fall is reached).",
            None,
            MetricType::Gauge,
        )?;
        for p in &self.probes {
            if let Some(up) = p.up {
                labeled_gauge(&mut m, &[("datacenter", p.dc.as_str())], i64::from(up))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::admin::testing::test_api;
    use crate::dns::{answer, parse, Client, Transport};
    use crate::geo::GeoDb;
    use crate::model::{DatacentersFile, ServicesFile};
    use crate::snapshot::{Builder, Inputs};

    fn builder_and_inputs() -> (
        Builder,
        Vec<crate::zone::ZoneFile>,
        DatacentersFile,
        ServicesFile,
    ) {
        let origin = hickory_proto::rr::Name::from_ascii("example.com.").expect("origin");
        let zone = crate::zone::parse_zone(
            include_str!("../../zones/example.com.zone"),
            "example.com.zone",
            &origin,
        )
        .expect("zone");
        let dcs = toml::from_str(include_str!("../../zones/datacenters.toml")).expect("dcs");
        let svcs = toml::from_str(include_str!("../../zones/services.toml")).expect("services");
        (
            Builder::new(1, Arc::new(GeoDb::empty())),
            vec![zone],
            dcs,
            svcs,
        )
    }

    /// A query with RD clear and no EDNS.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.extend_from_slice(&[0]);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        p
    }

    fn ask(snap: &Snapshot, name: &str, qtype: u16) {
        let q = query(name, qtype);
        let req = parse(&q).expect("query parses");
        let client = Client {
            source: "192.0.2.99".parse().expect("ip"),
            transport: Transport::Udp,
            cookie: crate::dns::Cookie::None,
        };
        let mut out = Vec::new();
        let outcome = answer(snap, &req, &client, &mut out);
        crate::dns::answer::record(snap, &outcome, crate::metrics::worker());
    }

    async fn scrape(router: &axum::Router, accept: Option<&str>) -> (String, String) {
        let mut req = Request::builder().uri("/metrics");
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let resp = router
            .clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let ct = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("content type")
            .to_string();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (ct, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }

    #[tokio::test]
    async fn counters_survive_rebuilds_and_scrape_as_prometheus_and_openmetrics() {
        let (mut builder, zones, dcs, svcs) = builder_and_inputs();
        let inputs = Inputs {
            zones: &zones,
            datacenters: &dcs.datacenter,
            services: &svcs.service,
        };
        let t = test_api(None).await;
        let first = builder.build(&inputs).expect("snapshot");
        ask(&first, "www.example.com", 1); // geo_nearest; no location: lon
        ask(&first, "rr.example.com", 1); // round_robin: lon, iad, sin
        ask(&first, "static.example.com", 1);
        ask(&first, "nope.example.com", 28);
        ask(&first, "example.org", 1); // REFUSED
                                       // A rebuild keeps every count.
        let snap = builder.build(&inputs).expect("snapshot");
        ask(&snap, "www.example.com", 1);
        ask(&snap, "api.example.com", 28);
        t.publisher.publish(snap);
        let probes: ProbeStatsFn = Arc::new(|| {
            vec![ProbeStats {
                dc: "lon".into(),
                kind: "tcp",
                probes: 3,
                failures: 1,
                up: Some(true),
                last_latency_ms: Some(2.0),
                latency_sum_ms: 1502.5,
                latency_buckets: [1, 1, 0, 0, 0, 0, 0, 0, 0, 1],
            }]
        });
        let router = t.router.layer(Extension(Probes(probes)));

        let (ct, text) = scrape(&router, None).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        for line in [
            r#"meridian_queries_total{zone="example.com.",qtype="A",rcode="NOERROR",policy="geo_nearest"} 2"#,
            r#"meridian_queries_total{zone="example.com.",qtype="A",rcode="NOERROR",policy="round_robin"} 1"#,
            r#"meridian_queries_total{zone="example.com.",qtype="A",rcode="NOERROR",policy="none"} 1"#,
            r#"meridian_queries_total{zone="example.com.",qtype="AAAA",rcode="NXDOMAIN",policy="none"} 1"#,
            r#"meridian_queries_total{zone="example.com.",qtype="AAAA",rcode="NOERROR",policy="weighted"} 1"#,
            r#"meridian_queries_total{zone="-",qtype="A",rcode="REFUSED",policy="none"} 1"#,
            r#"meridian_datacenter_answers_total{datacenter="sin"} 1"#,
            r#"meridian_datacenter_health{datacenter="lon",health="unknown"} 1"#,
            r#"meridian_datacenter_health{datacenter="lon",health="healthy"} 0"#,
            r#"meridian_datacenter_state{datacenter="iad",state="active"} 1"#,
            r#"meridian_datacenter_weight{datacenter="sin"} 100"#,
            r#"meridian_health_probe_duration_seconds_bucket{datacenter="lon",kind="tcp",le="0.001"} 1"#,
            r#"meridian_health_probe_duration_seconds_bucket{datacenter="lon",kind="tcp",le="0.005"} 2"#,
            r#"meridian_health_probe_duration_seconds_bucket{datacenter="lon",kind="tcp",le="1"} 2"#,
            r#"meridian_health_probe_duration_seconds_bucket{datacenter="lon",kind="tcp",le="+Inf"} 3"#,
            r#"meridian_health_probe_duration_seconds_sum{datacenter="lon",kind="tcp"} 1.5025"#,
            r#"meridian_health_probe_duration_seconds_count{datacenter="lon",kind="tcp"} 3"#,
            r#"meridian_health_probe_failures_total{datacenter="lon",kind="tcp"} 1"#,
            r#"meridian_health_probe_up{datacenter="lon"} 1"#,
            "# TYPE meridian_queries_total counter",
            "# TYPE meridian_health_probe_duration_seconds histogram",
            "meridian_up 1",
            "meridian_snapshot_generation 1",
            "meridian_raft_leader 1",
            "meridian_raft_is_leader 1",
        ] {
            has(&text, line);
        }
        // The real one-node cluster's own figures.
        let status = t.cluster.status();
        has(&text, &format!("meridian_raft_term {}", status.term));
        let applied = status.last_applied.unwrap_or(0);
        has(&text, &format!("meridian_raft_last_applied {applied}"));
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        };
        let age = value("meridian_snapshot_age_seconds");
        assert!((0.0..60.0).contains(&age), "{age}");
        // rr: lon, iad and sin; www twice: lon; api (weighted): lon or iad.
        let lon = value(r#"meridian_datacenter_answers_total{datacenter="lon"}"#);
        let iad = value(r#"meridian_datacenter_answers_total{datacenter="iad"}"#);
        assert!(lon >= 3.0 && iad >= 1.0 && lon + iad == 5.0, "{lon} {iad}");
        // No series for combinations never seen.
        assert!(!text.contains(r#"rcode="SERVFAIL""#), "{text}");

        let (ct, om) = scrape(
            &router,
            Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        )
        .await;
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        has(&om, "# TYPE meridian_queries counter");
        has(&om, "# UNIT meridian_snapshot_age_seconds seconds");
        has(
            &om,
            r#"meridian_queries_total{zone="-",qtype="A",rcode="REFUSED",policy="none"} 1"#,
        );
        assert_eq!(om.lines().last(), Some("# EOF"));
    }

    #[test]
    fn a_zone_or_datacenter_gone_loses_its_counters() {
        let (mut builder, zones, dcs, svcs) = builder_and_inputs();
        let inputs = Inputs {
            zones: &zones,
            datacenters: &dcs.datacenter,
            services: &svcs.service,
        };
        let snap = builder.build(&inputs).expect("snapshot");
        ask(&snap, "static.example.com", 1);
        ask(&snap, "www.example.com", 1);
        ask(&snap, "example.net", 1);
        let empty = builder
            .build(&Inputs {
                zones: &[],
                datacenters: &[],
                services: &[],
            })
            .expect("empty snapshot");
        assert!(empty.counters.zones.is_empty());
        assert!(empty.counters.dc_answers.is_empty());
        // Queries in no zone are counted on, whatever the zones.
        let mut n = 0;
        empty.counters.no_zone.for_each(|_, _, _, c| n += c);
        assert_eq!(n, 1);
        // Back again: counted from zero.
        let again = builder.build(&inputs).expect("snapshot");
        let mut n = 0;
        again.counters.zones[0].1.for_each(|_, _, _, c| n += c);
        assert_eq!((again.counters.zones[0].0.as_str(), n), ("example.com.", 0));
        assert!(again.counters.dc_answers.iter().all(|c| c.sum() == 0));
    }
}
