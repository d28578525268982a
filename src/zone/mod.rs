//! Zones: RFC 1035 zone text → validated records (with `file:line` errors).

mod parse;
mod records;

pub use parse::{load_zone_dir, load_zone_file, parse_zone, soa_serial_span, ZoneError};
pub use records::{Rr, ZoneFile};

pub mod dnssec;
pub mod handover;
mod index;
pub mod transfer;
pub mod update;

pub use index::{
    is_subdomain, name_len, parent, push_wire, rtype, service_conflict, wire, wire_lower, NodeRef,
    Rdata, RrSetRef, SignedNsec, Zone, ZoneSet, RENEW_LEFT_SECS,
};

#[cfg(test)]
mod resign_tests;

/// A wire name as presentation text (for messages).
pub fn display(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = wire;
    while let Some((&len, tail)) = rest.split_first() {
        if len == 0 || len as usize > tail.len() {
            break;
        }
        for &b in &tail[..len as usize] {
            match b {
                b'.' | b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                0x21..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
        rest = &tail[len as usize..];
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}
