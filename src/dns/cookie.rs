//! DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018): what the COOKIE
//! option of a query proves, and the option the reply carries.
//!
//! A server cookie is `version 1 | reserved (3, zero) | timestamp (4, Unix seconds) | hash
//! (8)`, the hash SipHash-2-4 keyed with the cluster's secret over `client cookie | version |
//! reserved | timestamp | client IP`. Every node has the same secrets (the snapshot's
//! [`CookieSecrets`]), so a cookie one node made is valid at every other. A server cookie
//! is valid from 5 minutes in the future to an hour in the past (RFC 9018 §4.3) under the
//! current or the previous secret; one older than half an hour, or made with the previous
//! secret, is replaced by a fresh one in the reply.
//!
//! A query with only a client cookie, or with a server cookie that is not valid, gets its
//! normal answer with a fresh server cookie (RFC 7873 §5.2.3: no BADCOOKIE); a malformed
//! option is FORMERR (§5.2.2). Only a valid server cookie proves the source address, and
//! exempts the reply from rate limiting.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

use crate::dns::request::{CookieIn, Edns};
use crate::snapshot::CookieSecrets;

/// The server cookie version of RFC 9018.
const VERSION: u8 = 1;
/// A server cookie's length (RFC 9018 §4).
pub const SERVER_COOKIE_LEN: usize = 16;
/// The COOKIE option of a reply: the client cookie and our server cookie.
pub const REPLY_LEN: usize = 8 + SERVER_COOKIE_LEN;
/// A server cookie is accepted up to an hour after it was made (RFC 9018 §4.3)…
const MAX_AGE: i64 = 3600;
/// …and up to five minutes before (clocks of the nodes differ).
const MAX_AHEAD: i64 = 300;
/// Older than this, a valid cookie is replaced by a fresh one in the reply.
const REFRESH_AGE: i64 = 1800;

/// The COOKIE option a reply carries, as the transport worked it out for `answer()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cookie {
    /// No COOKIE option in the reply: the query had none, or cookies are off.
    None,
    /// The query's option was malformed: FORMERR (RFC 7873 §5.2.2).
    Malformed,
    /// Reply with this option data: the client cookie and a server cookie.
    Reply([u8; REPLY_LEN]),
}

/// What a query's COOKIE option proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    pub reply: Cookie,
    /// The query carried a valid server cookie: its source address is proven.
    pub valid: bool,
}

/// Check the cookie of a query from `client` at `now` (Unix seconds) with `secrets`.
pub fn check(secrets: &CookieSecrets, edns: Option<&Edns>, client: IpAddr, now: u32) -> Checked {
    let none = Checked {
        reply: Cookie::None,
        valid: false,
    };
    // Options of EDNS versions we do not speak are not ours to read (BADVERS).
    let Some(cookie) = edns.filter(|e| e.version == 0).and_then(|e| e.cookie) else {
        return none;
    };
    let (client_cookie, server_buf, server_len) = match cookie {
        CookieIn::Malformed => {
            return Checked {
                reply: Cookie::Malformed,
                valid: false,
            }
        }
        CookieIn::Present {
            client: c,
            server,
            server_len,
        } => (c, server, server_len as usize),
    };
    let server = &server_buf[..server_len.min(server_buf.len())];
    let mut reply = [0u8; REPLY_LEN];
    reply[..8].copy_from_slice(&client_cookie);
    let valid = match validate(secrets, &client_cookie, server, client, now) {
        Some(Validity::Keep) => {
            reply[8..].copy_from_slice(server);
            true
        }
        Some(Validity::Refresh) => {
            reply[8..].copy_from_slice(&make(&secrets.current, &client_cookie, client, now));
            true
        }
        None => {
            reply[8..].copy_from_slice(&make(&secrets.current, &client_cookie, client, now));
            false
        }
    };
    Checked {
        reply: Cookie::Reply(reply),
        valid,
    }
}

/// A valid server cookie: echo it, or send a fresh one.
enum Validity {
    Keep,
    Refresh,
}

/// Whether `server` is a valid server cookie of ours for this client cookie and address.
fn validate(
    secrets: &CookieSecrets,
    client_cookie: &[u8; 8],
    server: &[u8],
    client: IpAddr,
    now: u32,
) -> Option<Validity> {
    if server.len() != SERVER_COOKIE_LEN || server[0] != VERSION {
        return None;
    }
    let stamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    // Serial number arithmetic (RFC 1982), as RFC 9018 §4.3 asks: the clock wraps in 2106.
    let age = i64::from(now.wrapping_sub(stamp) as i32);
    if !(-MAX_AHEAD..=MAX_AGE).contains(&age) {
        return None;
    }
    let mut head = [0u8; 8];
    head.copy_from_slice(&server[..8]);
    if same(
        &hash(&secrets.current, client_cookie, &head, client),
        &server[8..],
    ) {
        return Some(if age > REFRESH_AGE {
            Validity::Refresh
        } else {
            Validity::Keep
        });
    }
    let previous = secrets.previous.as_ref()?;
    same(&hash(previous, client_cookie, &head, client), &server[8..]).then_some(Validity::Refresh)
}

/// A fresh server cookie (RFC 9018 §4.2).
pub fn make(secret: &[u8; 16], client_cookie: &[u8; 8], client: IpAddr, now: u32) -> [u8; 16] {
    let mut out = [0u8; SERVER_COOKIE_LEN];
    out[0] = VERSION;
    out[4..8].copy_from_slice(&now.to_be_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&out[..8]);
    out[8..].copy_from_slice(&hash(secret, client_cookie, &head, client));
    out
}

/// SipHash-2-4 over client cookie | version | reserved | timestamp | client IP.
fn hash(secret: &[u8; 16], client_cookie: &[u8; 8], head: &[u8; 8], client: IpAddr) -> [u8; 8] {
    let mut h = SipHasher24::new_with_key(secret);
    h.write(client_cookie);
    h.write(head);
    match client {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish().to_le_bytes()
}

/// Equal, without an early exit that would time how much of a forged hash was right.
fn same(a: &[u8; 8], b: &[u8]) -> bool {
    b.len() == 8 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The current Unix time in seconds, as cookies count it.
pub fn unix_now() -> u32 {
    super::tsig::unix_now() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::GeoDb;
    use crate::snapshot::{Builder, Inputs};
    use std::sync::Arc;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex(s).try_into().expect("length")
    }

    fn edns(client: [u8; 8], server: &[u8]) -> Edns {
        let mut buf = [0u8; 32];
        buf[..server.len()].copy_from_slice(server);
        Edns {
            cookie: Some(CookieIn::Present {
                client,
                server: buf,
                server_len: server.len() as u8,
            }),
            ..Edns::default()
        }
    }

    fn secrets(current: &str) -> CookieSecrets {
        CookieSecrets {
            current: arr(current),
            previous: None,
        }
    }

    const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";

    #[test]
    fn rfc9018_appendix_a_test_vectors() {
        let s: [u8; 16] = arr(SECRET);
        let ip: IpAddr = "198.51.100.100".parse().expect("ip");
        let c: [u8; 8] = arr("2464c4abcf10c957");
        assert_eq!(
            make(&s, &c, ip, 1559731985).to_vec(),
            hex("010000005cf79f111f8130c3eee29480")
        );
        assert_eq!(
            make(&s, &c, ip, 1559734385).to_vec(),
            hex("010000005cf7a871d4a564a1442aca77")
        );
        let ip3: IpAddr = "203.0.113.203".parse().expect("ip");
        assert_eq!(
            make(&s, &arr("fc93fc62807ddb86"), ip3, 1559734700).to_vec(),
            hex("010000005cf7a9acf73a7810aca2381e")
        );
    }

    #[test]
    fn rfc7873_5_2_3_client_cookie_only_gets_a_fresh_server_cookie() {
        let s = secrets(SECRET);
        let ip: IpAddr = "198.51.100.100".parse().expect("ip");
        let c: [u8; 8] = arr("2464c4abcf10c957");
        let got = check(&s, Some(&edns(c, &[])), ip, 1559731985);
        assert!(!got.valid);
        assert_eq!(
            got.reply,
            Cookie::Reply(arr("2464c4abcf10c957010000005cf79f111f8130c3eee29480"))
        );
    }

    #[test]
    fn rfc9018_4_3_a_valid_cookie_is_kept_for_half_an_hour_then_refreshed_and_dead_after_an_hour() {
        let s = secrets(SECRET);
        let ip: IpAddr = "198.51.100.100".parse().expect("ip");
        let c: [u8; 8] = arr("2464c4abcf10c957");
        let t0 = 1559731985;
        let server = make(&s.current, &c, ip, t0);
        let at = |now: u32| check(&s, Some(&edns(c, &server)), ip, now);
        // Kept as it is for half an hour.
        for now in [t0, t0 + 1800] {
            let got = at(now);
            assert!(got.valid);
            assert_eq!(
                got.reply,
                Cookie::Reply(
                    [c.to_vec(), server.to_vec()]
                        .concat()
                        .try_into()
                        .expect("24")
                )
            );
        }
        // Then valid, with a fresh one in the reply (RFC 9018 Appendix A.2).
        let got = at(1559734385);
        assert!(got.valid);
        assert_eq!(
            got.reply,
            Cookie::Reply(arr("2464c4abcf10c957010000005cf7a871d4a564a1442aca77"))
        );
        // More than an hour old, or more than 5 minutes ahead: not valid, a fresh one.
        assert!(at(t0 + 3600).valid);
        assert!(!at(t0 + 3601).valid);
        assert!(at(t0 - 300).valid);
        assert!(!at(t0 - 301).valid);
        assert!(matches!(at(t0 + 3601).reply, Cookie::Reply(_)));
    }

    #[test]
    fn forged_or_foreign_cookies_are_not_valid() {
        let s = secrets(SECRET);
        let ip: IpAddr = "198.51.100.100".parse().expect("ip");
        let c: [u8; 8] = arr("2464c4abcf10c957");
        let now = 1559731985;
        let good = make(&s.current, &c, ip, now);
        let mut forged = good;
        forged[15] ^= 1;
        assert!(!check(&s, Some(&edns(c, &forged)), ip, now).valid);
        // Another client address or client cookie.
        let other: IpAddr = "198.51.100.101".parse().expect("ip");
        assert!(!check(&s, Some(&edns(c, &good)), other, now).valid);
        assert!(!check(&s, Some(&edns([9; 8], &good)), ip, now).valid);
        // Another version, or another length.
        let mut v2 = good;
        v2[0] = 2;
        assert!(!check(&s, Some(&edns(c, &v2)), ip, now).valid);
        assert!(!check(&s, Some(&edns(c, &good[..12])), ip, now).valid);
        // Malformed, and no cookie at all.
        let bad = Edns {
            cookie: Some(CookieIn::Malformed),
            ..Edns::default()
        };
        assert_eq!(check(&s, Some(&bad), ip, now).reply, Cookie::Malformed);
        assert_eq!(
            check(&s, Some(&Edns::default()), ip, now).reply,
            Cookie::None
        );
        assert_eq!(check(&s, None, ip, now).reply, Cookie::None);
    }

    /// Two nodes' snapshots, built from the cluster's secrets, accept each other's cookies;
    /// after a rotation the old cookies stay valid and are answered with fresh ones.
    #[test]
    fn snapshots_with_the_same_secrets_validate_each_others_cookies_across_a_rotation() {
        let build = |node, secrets: &CookieSecrets| {
            let mut b = Builder::new(node, Arc::new(GeoDb::empty()));
            assert!(b.set_cookie_secrets(secrets));
            assert!(!b.set_cookie_secrets(secrets), "unchanged");
            b.build(&Inputs {
                zones: &[],
                datacenters: &[],
                services: &[],
            })
            .expect("build")
        };
        let cluster = CookieSecrets::random();
        let (node1, node2) = (build(1, &cluster), build(2, &cluster));
        let ip: IpAddr = "2001:db8::53".parse().expect("ip");
        let c = [1, 2, 3, 4, 5, 6, 7, 8];
        let now = unix_now();
        let Cookie::Reply(from1) = check(&node1.cookies, Some(&edns(c, &[])), ip, now).reply else {
            panic!("a cookie from node 1");
        };
        let at2 = check(&node2.cookies, Some(&edns(c, &from1[8..])), ip, now + 5);
        assert!(at2.valid, "node 2 accepts node 1's cookie");
        assert_eq!(at2.reply, Cookie::Reply(from1), "and echoes it");
        // A node with another secret does not.
        let stranger = build(3, &CookieSecrets::random());
        assert!(!check(&stranger.cookies, Some(&edns(c, &from1[8..])), ip, now).valid);
        // Rotated: the old cookie is still valid, and replaced.
        let rotated = build(2, &cluster.rotated());
        let after = check(&rotated.cookies, Some(&edns(c, &from1[8..])), ip, now + 60);
        assert!(after.valid);
        let Cookie::Reply(fresh) = after.reply else {
            panic!("a reply cookie");
        };
        assert_ne!(fresh, from1);
        assert!(check(&rotated.cookies, Some(&edns(c, &fresh[8..])), ip, now + 60).valid);
        // Two rotations later it is not.
        let twice = build(2, &cluster.rotated().rotated());
        assert!(!check(&twice.cookies, Some(&edns(c, &from1[8..])), ip, now + 60).valid);
    }
}
