//! Zones: RFC 1035 zone text → validated records (with `file:line` errors).

mod parse;

pub use parse::{load_zone_dir, load_zone_file, parse_zone, ZoneError, ZoneFile};

mod index;

pub use index::{
    is_subdomain, parent, rtype, wire, wire_lower, IndexError, Node, Rdata, RrSet, Zone, ZoneSet,
};
