//! Response rate limiting (RRL) of UDP replies, so that a node cannot be used to reflect
//! and amplify traffic at a forged source address.
//!
//! The scheme is the one Knot's and NSD's RRL use: every reply is put in a *class* (the same
//! positive answer: name and type; NODATA: name and type; NXDOMAIN and wildcard answers: the
//! zone; referrals: the delegation; errors: the zone) and counted against a token bucket for
//! its class and the client's network (the source address cut to `ipv4_prefix` /
//! `ipv6_prefix`). A bucket refills at `responses_per_second` and holds one second's worth,
//! the burst allowance. A reply with no token left is *limited*: every `slip`-th limited
//! reply goes out truncated (TC, no records), so that a real client behind the forged
//! address retries over TCP; the others are dropped. TCP replies and queries with a valid
//! server cookie are never limited (their source address is proven): the transport does not
//! ask.
//!
//! Each UDP worker owns its [`Limiter`]: a fixed table of buckets allocated once, hashed with
//! a key of its own (clients choose what is hashed, so the hash is keyed), set-associative
//! with four ways; no lock, and nothing is allocated per query. A full set gives its least
//! recently used bucket to the newcomer, which starts with half a burst (Knot's "slow start"
//! after a collision) so that flooding the table with other keys does not reset a limited
//! flow to a full burst. As in NSD, whose workers keep their own tables, a flow spread over
//! several workers (several source ports) gets up to one budget per worker.

use std::hash::Hasher;
use std::net::IpAddr;
use std::time::Instant;

use siphasher::sip::SipHasher13;

use crate::config::RateLimit;
use crate::dns::answer::{Class, Outcome, KEY_ROOT};
use crate::dns::request::Request;

/// Buckets per set: a look-up compares at most this many.
const WAYS: usize = 4;
/// Sets per table (a power of two): 64 Ki buckets, 1.5 MiB per worker.
const SETS: usize = 1 << 14;
/// Milli-tokens per reply: tokens are kept in thousandths so that a refill every
/// millisecond adds `responses_per_second` of them exactly.
const COST: u64 = 1000;

/// What to do with a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: send it as it is.
    Send,
    /// Limited, and its turn to slip: send it truncated ([`crate::dns::answer::slip`]).
    Slip,
    /// Limited: send nothing.
    Drop,
}

/// One class of replies to one client network.
#[derive(Clone, Copy, Default)]
struct Bucket {
    /// The key's hash (never 0 when in use); 0: free.
    fp: u64,
    /// Milliseconds since [`Limiter::epoch`] of the last refill.
    stamp: u64,
    /// Milli-tokens left (at most one second's worth).
    tokens: u32,
    /// Replies limited so far (for `slip`).
    limited: u32,
}

/// One worker's rate limiter.
pub struct Limiter {
    config: RateLimit,
    /// The most milli-tokens a bucket holds: one second's worth.
    capacity: u64,
    buckets: Box<[Bucket]>,
    keys: (u64, u64),
    epoch: Instant,
}

impl Limiter {
    /// A limiter with its table allocated and a random hash key.
    pub fn new(config: RateLimit) -> Limiter {
        Limiter {
            config,
            capacity: u64::from(config.responses_per_second.max(1)) * COST,
            buckets: vec![Bucket::default(); SETS * WAYS].into_boxed_slice(),
            keys: (rand::random(), rand::random()),
            epoch: Instant::now(),
        }
    }

    /// The limiter's clock, in milliseconds: read once per batch of queries.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Count the reply `outcome` to `req` from `source` at `now` (from [`Limiter::now`]),
    /// and say whether it may go out.
    pub fn check(
        &mut self,
        source: IpAddr,
        req: &Request<'_>,
        outcome: &Outcome,
        now: u64,
    ) -> Verdict {
        let fp = self.key(source, req, outcome);
        self.take(fp, now)
    }

    /// The hash of a reply's class, client network and the names the class is counted
    /// under; never 0.
    fn key(&self, source: IpAddr, req: &Request<'_>, outcome: &Outcome) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write_u8(outcome.class as u8);
        match source {
            IpAddr::V4(a) => {
                h.write_u8(4);
                h.write_u32(mask32(u32::from(a), self.config.ipv4_prefix));
            }
            IpAddr::V6(a) => {
                // An IPv4-mapped source is an IPv4 client.
                if let Some(v4) = a.to_ipv4_mapped() {
                    h.write_u8(4);
                    h.write_u32(mask32(u32::from(v4), self.config.ipv4_prefix));
                } else {
                    h.write_u8(6);
                    h.write_u128(mask128(u128::from(a), self.config.ipv6_prefix));
                }
            }
        }
        if matches!(outcome.class, Class::Positive | Class::NoData) {
            h.write_u16(outcome.qtype);
        }
        let name = req
            .question
            .as_ref()
            .map_or(&[0u8][..], |q| q.name.as_slice());
        let name = match outcome.key_at {
            KEY_ROOT => &[0u8][..],
            at => name.get(at as usize..).unwrap_or(&[0u8][..]),
        };
        h.write(name);
        h.finish() | 1
    }

    /// Take a token from the bucket of `fp`, refilled up to `now`.
    fn take(&mut self, fp: u64, now: u64) -> Verdict {
        let set = ((fp >> 32) as usize & (SETS - 1)) * WAYS;
        let ways = &mut self.buckets[set..set + WAYS];
        let b = match ways.iter().position(|b| b.fp == fp) {
            Some(i) => &mut ways[i],
            None => {
                // A free way, else the least recently used one.
                let i = ways
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| if b.fp == 0 { 0 } else { b.stamp + 1 })
                    .map_or(0, |(i, _)| i);
                let victim = &mut ways[i];
                // A bucket idle for a second would be full anyway; one taken from a busy
                // flow starts with half a burst.
                let idle = victim.fp == 0 || now.saturating_sub(victim.stamp) >= 1000;
                let tokens = if idle {
                    self.capacity
                } else {
                    self.capacity / 2
                };
                *victim = Bucket {
                    fp,
                    stamp: now,
                    tokens: tokens as u32,
                    limited: 0,
                };
                victim
            }
        };
        let rate = self.capacity / COST;
        let refill = now.saturating_sub(b.stamp).saturating_mul(rate);
        let tokens = (u64::from(b.tokens) + refill).min(self.capacity);
        b.stamp = b.stamp.max(now);
        if tokens >= COST {
            b.tokens = (tokens - COST) as u32;
            return Verdict::Send;
        }
        b.tokens = tokens as u32;
        b.limited = b.limited.wrapping_add(1);
        let slip = self.config.slip;
        if slip > 0 && b.limited % slip == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The first `prefix` bits of an IPv4 address.
fn mask32(a: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => a,
        p => a & (u32::MAX << (32 - p)),
    }
}

/// The first `prefix` bits of an IPv6 address.
fn mask128(a: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => a,
        p => a & (u128::MAX << (128 - p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::request::parse;
    use crate::snapshot::ZoneKey;

    fn query(name: &[u8], qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        p
    }

    fn outcome(class: Class, key_at: u8, qtype: u16) -> Outcome {
        Outcome {
            rcode: 0,
            truncated: false,
            len: 100,
            qtype,
            zone: ZoneKey::NONE,
            service: None,
            members: 0,
            class,
            key_at,
            opt_len: 0,
        }
    }

    fn config(rate: u32, slip: u32) -> RateLimit {
        RateLimit {
            responses_per_second: rate,
            slip,
            ..RateLimit::default()
        }
    }

    /// `n` replies at `now`: (sent, slipped, dropped).
    fn burst(
        l: &mut Limiter,
        src: &str,
        q: &[u8],
        o: &Outcome,
        n: usize,
        now: u64,
    ) -> (usize, usize, usize) {
        let req = parse(q).expect("query");
        let src: IpAddr = src.parse().expect("ip");
        let mut counts = (0, 0, 0);
        for _ in 0..n {
            match l.check(src, &req, o, now) {
                Verdict::Send => counts.0 += 1,
                Verdict::Slip => counts.1 += 1,
                Verdict::Drop => counts.2 += 1,
            }
        }
        counts
    }

    const WWW: &[u8] = b"\x03www\x07example\x03com\x00";

    #[test]
    fn burst_of_one_seconds_rate_then_every_slip_th_truncated() {
        let mut l = Limiter::new(config(20, 2));
        let q = query(WWW, 1);
        let o = outcome(Class::Positive, 0, 1);
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 2000, 5), (20, 990, 990));
        // Half a second later, half a second's worth.
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 20, 505).0, 10);
        // A second of silence fills the bucket again, never beyond one second's worth.
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 100, 10_000).0, 20);
    }

    #[test]
    fn slip_zero_drops_all_and_slip_one_truncates_all() {
        let q = query(WWW, 1);
        let o = outcome(Class::Positive, 0, 1);
        let mut l = Limiter::new(config(5, 0));
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 100, 0), (5, 0, 95));
        let mut l = Limiter::new(config(5, 1));
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 100, 0), (5, 95, 0));
        let mut l = Limiter::new(config(5, 3));
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 95, 0), (5, 30, 60));
    }

    #[test]
    fn clients_share_a_budget_within_their_network_only() {
        let mut l = Limiter::new(config(10, 0));
        let q = query(WWW, 1);
        let o = outcome(Class::Positive, 0, 1);
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 6, 0).0, 6);
        assert_eq!(burst(&mut l, "192.0.2.200", &q, &o, 6, 0).0, 4, "same /24");
        assert_eq!(
            burst(&mut l, "192.0.3.1", &q, &o, 15, 0).0,
            10,
            "another /24"
        );
        assert_eq!(
            burst(&mut l, "::ffff:192.0.2.9", &q, &o, 5, 0).0,
            0,
            "mapped"
        );
        assert_eq!(burst(&mut l, "2001:db8:0:ff::1", &q, &o, 6, 0).0, 6);
        assert_eq!(
            burst(&mut l, "2001:db8:0:1::1", &q, &o, 6, 0).0,
            4,
            "same /56"
        );
        assert_eq!(burst(&mut l, "2001:db8:0:100::1", &q, &o, 6, 0).0, 6);
    }

    #[test]
    fn classes_key_as_knot_and_nsd_do() {
        let mut l = Limiter::new(config(3, 0));
        let www = query(WWW, 1);
        let ftp = query(b"\x03ftp\x07example\x03com\x00", 1);
        let src = "192.0.2.1";
        // A positive answer: per name and type.
        let pos = outcome(Class::Positive, 0, 1);
        assert_eq!(burst(&mut l, src, &www, &pos, 5, 0).0, 3);
        assert_eq!(burst(&mut l, src, &ftp, &pos, 5, 0).0, 3);
        let aaaa = outcome(Class::Positive, 0, 28);
        assert_eq!(burst(&mut l, src, &www, &aaaa, 5, 0).0, 3);
        // NXDOMAIN: per zone (key_at 4 is example.com in both names).
        let nx = outcome(Class::NxDomain, 4, 1);
        assert_eq!(burst(&mut l, src, &www, &nx, 2, 0).0, 2);
        assert_eq!(burst(&mut l, src, &ftp, &nx, 2, 0).0, 1);
        // Errors for no zone: one budget.
        let err = outcome(Class::Error, KEY_ROOT, 1);
        assert_eq!(burst(&mut l, src, &www, &err, 2, 0).0, 2);
        assert_eq!(burst(&mut l, src, &ftp, &err, 2, 0).0, 1);
    }

    #[test]
    fn a_flooded_table_gives_an_evicted_flow_half_a_burst() {
        let mut l = Limiter::new(config(100, 0));
        let q = query(WWW, 1);
        let o = outcome(Class::Positive, 0, 1);
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 200, 0).0, 100);
        // Every way of every set taken by other flows, all busy.
        for i in 0..(SETS * WAYS * 4) as u32 {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            let req = parse(&q).expect("query");
            l.check(src, &req, &o, 1);
        }
        assert_eq!(burst(&mut l, "192.0.2.1", &q, &o, 200, 1).0, 50);
    }

    #[test]
    fn masks() {
        assert_eq!(mask32(0xc000_02ff, 24), 0xc000_0200);
        assert_eq!(mask32(0xc000_02ff, 0), 0);
        assert_eq!(mask32(0xc000_02ff, 32), 0xc000_02ff);
        assert_eq!(mask128(u128::MAX, 56), u128::MAX << 72);
        assert_eq!(mask128(u128::MAX, 128), u128::MAX);
    }
}
