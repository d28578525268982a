//! Zone text → records, with `file:line` errors and zone-level validation.
//!
//! # How the text is read
//!
//! hickory's [`Parser`] reports errors without a position and returns records merged into
//! RRsets (file order lost; a second CNAME silently replaces the first; exact duplicates
//! merged), and it reads `$INCLUDE`d files from disk (absolute paths even without a base
//! path, and even after `$TTL 300 ` on the same line). So the text is read in two layers:
//!
//! 1. [`Entries`] splits the text into *entries* (one record or directive each), with
//!    the line each starts on. Its tokenizer mirrors hickory's lexer: `;` comments, quoted
//!    strings with `\` escapes (which may span lines), and `( … )` groups spanning lines
//!    (inside which, as in hickory, `"` is not special).
//! 2. [`Reader`] applies directives (`$ORIGIN`, `$TTL`; `$INCLUDE` is refused) and reads
//!    each record's header (owner, TTL, class, type) as RFC 1035 §5.1 and hickory do. A,
//!    AAAA, CNAME, NS and PTR data is read straight to wire form ([`fast_rdata`]); other
//!    record data is handed to hickory's parser as a one-line, self-contained entry
//!    (`@ TTL TYPE RDATA`, with the current origin), so every type hickory parses is
//!    supported and each record is parsed exactly once. Errors are tied to the first line
//!    of the entry. Three hickory gaps are covered on the way: `@` in name fields
//!    ([`rdata_text`]), `\DDD` escapes in quoted strings ([`requote`]), and extra fields
//!    silently ignored ([`field_count`]).
//!
//! Each record goes into the zone's compact store ([`ZoneFile`]) in wire form, exact
//! duplicates dropped. Then [`validate`] checks the zone: records encodable, one SOA at
//! the origin, NS at the origin, no data outside the zone, CNAME exclusivity.

use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::str::FromStr;

use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_proto::serialize::txt::{parse_ttl, Parser};

use super::records::{emit_rdata, Rr, Seen, ZoneFile};
use super::{is_subdomain, push_wire};

/// Largest TTL accepted (RFC 2181 §8: the top bit must be clear).
const MAX_TTL: u32 = 0x7fff_ffff;

/// Why a zone could not be loaded.
///
/// Displayed as `FILE:LINE: message` when tied to a line, `FILE: message` otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The text is not valid zone syntax; `line` is where the broken entry starts.
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    /// A record parsed but breaks a zone rule (out of zone, CNAME and other data, ...).
    #[error("{file}:{line}: {message}")]
    Record {
        file: String,
        line: usize,
        message: String,
    },
    /// The zone as a whole is invalid (no SOA, no NS at the origin), or the file name
    /// does not name a zone.
    #[error("{file}: {message}")]
    Zone { file: String, message: String },
    /// The file or directory could not be read.
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
}

impl ZoneError {
    /// The line the error is tied to, if any (1-based).
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } | Self::Record { line, .. } => Some(*line),
            Self::Zone { .. } | Self::Io { .. } => None,
        }
    }

    /// The file (or directory) the error is about, as given.
    pub fn file(&self) -> &str {
        match self {
            Self::Syntax { file, .. }
            | Self::Record { file, .. }
            | Self::Zone { file, .. }
            | Self::Io { file, .. } => file,
        }
    }
}

/// Parse zone text.
///
/// `file` is the name used in error messages; `origin` is the zone's origin (made absolute
/// and lower-cased). `$ORIGIN` in the text only changes how relative names are completed;
/// the zone's origin stays `origin`, and records it puts outside the zone are errors.
/// `$INCLUDE` is refused: a zone must be self-contained.
pub fn parse_zone(text: &str, file: &str, origin: &Name) -> Result<ZoneFile, ZoneError> {
    let split_error = |e: SplitError| ZoneError::Syntax {
        file: file.to_owned(),
        line: e.line,
        message: e.message,
    };
    // A syntax error anywhere is reported before any error of a record: the text is split
    // once to check it, then again, an entry at a time, to be read.
    for entry in Entries::new(text) {
        entry.map_err(split_error)?;
    }

    // The wire form is about as long as the text (a line of the text is a record).
    let mut zone = ZoneFile::with_capacity(origin, text.len(), text.len() / 32);
    let mut reader = Reader::new(zone.origin.clone());
    let mut lines: Vec<u32> = Vec::with_capacity(text.len() / 32);
    let mut seen = Seen::default();
    // The first record that parsed but cannot be written in wire form, and why: an error
    // once the records before it are checked (as `validate` would find it).
    let mut broken: Option<(usize, String)> = None;
    let too_large = |e: super::records::RrError| ZoneError::Zone {
        file: file.to_owned(),
        message: e.to_string(),
    };
    for entry in Entries::new(text) {
        let entry = entry.map_err(split_error)?;
        let parsed = reader.entry(&entry).map_err(|message| ZoneError::Syntax {
            file: file.to_owned(),
            line: entry.line,
            message,
        })?;
        let Some(parsed) = parsed else { continue };
        let line = u32::try_from(entry.line).unwrap_or(u32::MAX);
        let rr = Rr {
            owner: &reader.owner,
            rtype: parsed.rtype,
            ttl: parsed.ttl,
            rdata: &reader.rdata,
        };
        if let Some(why) = parsed.broken {
            if broken.is_none() {
                broken = Some((zone.len(), why));
            }
            zone.push(Rr { rdata: &[], ..rr }).map_err(too_large)?;
            lines.push(line);
        } else if seen.insert(&rr, &zone) {
            zone.push(rr).map_err(too_large)?;
            lines.push(line);
        } else {
            tracing::warn!(
                "{file}:{}: duplicate {} record at {} ignored",
                entry.line,
                RecordType::from(rr.rtype),
                show_name(rr.owner)
            );
        }
    }

    drop(seen);
    validate(file, &zone, &lines, broken)?;
    zone.shrink();
    Ok(zone)
}

/// A lower-case or as-is wire name as hickory shows it (for messages).
fn show_name(wire: &[u8]) -> String {
    match Name::read(&mut BinDecoder::new(wire)) {
        Ok(name) => name.to_string(),
        Err(_) => super::display(wire),
    }
}

/// A plain name (`www`, `host-1.example.com.`, `*.wild`, `_sip._tcp`) in wire form,
/// completed with `origin` (wire), as `Name::parse` makes it (its IDNA step lower-cases
/// labels but those starting with `_`; `owner` lower-cases everything), without building
/// a hickory `Name`. `None` (nothing written) for anything else: `Name::parse` decides.
fn fast_name(word: &str, origin: &[u8], owner: bool, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    let written = (|| {
        let b = word.as_bytes();
        if b == b"." {
            out.push(0);
            return Some(());
        }
        let (body, absolute) = match b.strip_suffix(b".") {
            Some(body) => (body, true),
            None => (b, false),
        };
        for label in body.split(|&c| c == b'.') {
            let (&first, &last) = (label.first()?, label.last()?);
            if label.len() > 63 {
                return None;
            }
            let keep_case = if label == b"*" {
                true
            } else if first == b'_' {
                if !label
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                {
                    return None;
                }
                true
            } else {
                let plain = label
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'-');
                let punycode = label.len() >= 4 && label[..4].eq_ignore_ascii_case(b"xn--");
                if !plain || punycode || first == b'-' || last == b'-' {
                    return None;
                }
                false
            };
            out.push(label.len() as u8);
            if keep_case && !owner {
                out.extend_from_slice(label);
            } else {
                out.extend(label.iter().map(u8::to_ascii_lowercase));
            }
        }
        if absolute {
            out.push(0);
        } else if owner {
            out.extend(origin.iter().map(u8::to_ascii_lowercase));
        } else {
            out.extend_from_slice(origin);
        }
        // Long names are left to hickory's own length rules.
        (out.len() - start < 250).then_some(())
    })();
    if written.is_none() {
        out.truncate(start);
    }
    written
}

/// Read `DIR/NAME.zone`; its origin is `NAME` (`example.com.zone` → `example.com.`).
pub fn load_zone_file(path: &Path) -> Result<ZoneFile, ZoneError> {
    let file = path.display().to_string();
    let origin = origin_from_file_name(path).map_err(|message| ZoneError::Zone {
        file: file.clone(),
        message,
    })?;
    let text = std::fs::read_to_string(path).map_err(|error| ZoneError::Io {
        file: file.clone(),
        error,
    })?;
    parse_zone(&text, &file, &origin)
}

/// Load every `*.zone` file of a directory (not hidden files), sorted by file name.
///
/// All broken files are reported, not just the first; two files for the same origin are
/// an error too.
pub fn load_zone_dir(dir: &Path) -> Result<Vec<ZoneFile>, Vec<ZoneError>> {
    let dir_name = dir.display().to_string();
    let read_dir = std::fs::read_dir(dir).map_err(|error| {
        vec![ZoneError::Io {
            file: dir_name.clone(),
            error,
        }]
    })?;

    let mut errors = Vec::new();
    let mut paths = Vec::new();
    for entry in read_dir {
        match entry {
            Ok(entry) => {
                let name = entry.file_name();
                let lossy = name.to_string_lossy();
                if lossy.ends_with(".zone") && !lossy.starts_with('.') {
                    paths.push((name.clone(), entry.path()));
                }
            }
            Err(error) => errors.push(ZoneError::Io {
                file: dir_name.clone(),
                error,
            }),
        }
    }
    paths.sort();

    let mut zones = Vec::with_capacity(paths.len());
    let mut origins: HashMap<Name, String> = HashMap::new();
    for (_, path) in paths {
        match load_zone_file(&path) {
            Ok(zone) => {
                let file = path.display().to_string();
                if let Some(first) = origins.get(&zone.origin) {
                    errors.push(ZoneError::Zone {
                        file,
                        message: format!("zone {} is already loaded from {first}", zone.origin),
                    });
                } else {
                    origins.insert(zone.origin.clone(), file);
                    zones.push(zone);
                }
            }
            Err(error) => errors.push(error),
        }
    }

    if errors.is_empty() {
        Ok(zones)
    } else {
        Err(errors)
    }
}

/// `example.com.zone` → `example.com.`
fn origin_from_file_name(path: &Path) -> Result<Name, String> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| "the file name is not valid UTF-8".to_owned())?;
    let stem = name
        .strip_suffix(".zone")
        .filter(|stem| !stem.is_empty())
        .ok_or_else(|| format!("the file name '{name}' is not of the form NAME.zone"))?;
    let mut origin = Name::from_utf8(stem)
        .map_err(|e| format!("the file name '{name}' does not name a zone: {e}"))?;
    origin.set_fqdn(true);
    Ok(origin.to_lowercase())
}

/// Where the serial field of the first SOA record is in `text`, as a byte range: for a tool
/// that puts another serial there and keeps the rest byte for byte (`meridian export`).
/// The text is split as the parser splits it (comments, quotes, escapes, parentheses).
/// `None` when no SOA record with a numeric serial is found, or the text does not split.
pub fn soa_serial_span(text: &str) -> Option<std::ops::Range<usize>> {
    let base = text.as_ptr() as usize;
    for entry in Entries::new(text) {
        let entry = entry.ok()?;
        let mut words: Vec<(&str, bool)> = Vec::new();
        for item in &entry.items {
            match item {
                Item::Word(w) => words.push((w, false)),
                Item::Quoted(q) => words.push((q, true)),
                Item::Group(g) => words.extend(g.iter().map(|w| (*w, false))),
            }
        }
        match words.first() {
            None => continue,
            Some((w, false)) if w.starts_with('$') => continue, // a directive
            Some(_) => {}
        }
        let skip = usize::from(!entry.blank_owner);
        let Some(soa) = words
            .iter()
            .skip(skip)
            .position(|&(w, quoted)| !quoted && w.eq_ignore_ascii_case("SOA"))
            .map(|p| p + skip)
        else {
            continue;
        };
        // Between the owner and the type only a TTL and a class may stand.
        let ttl_or_class = |&(w, quoted): &(&str, bool)| {
            !quoted
                && (["IN", "CH", "HS", "CS"]
                    .iter()
                    .any(|c| w.eq_ignore_ascii_case(c))
                    || (w.starts_with(|c: char| c.is_ascii_digit())
                        && w.chars().all(|c| c.is_ascii_alphanumeric())))
        };
        if !words[skip..soa].iter().all(ttl_or_class) {
            continue;
        }
        // MNAME, RNAME, then the serial.
        match words.get(soa + 3) {
            Some(&(serial, false))
                if !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let start = serial.as_ptr() as usize - base;
                return Some(start..start + serial.len());
            }
            _ => continue,
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Layer 1: entries.

/// A syntax error found while splitting the text.
#[derive(Debug)]
struct SplitError {
    line: usize,
    message: String,
}

/// One item of an entry, as raw text (escapes and quotes included).
#[derive(Debug, PartialEq)]
enum Item<'a> {
    /// An unquoted word: a name, a number, `@`, a type, ...
    Word(&'a str),
    /// A quoted string, quotes included.
    Quoted(&'a str),
    /// The words of a `( … )` group.
    Group(Vec<&'a str>),
}

/// One directive or record, with the line it starts on.
#[derive(Debug)]
struct Entry<'a> {
    line: usize,
    /// The entry starts with white space: the owner is the previous record's.
    blank_owner: bool,
    items: Vec<Item<'a>>,
}

/// Position in the text while splitting it.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn slice(&self, start: usize) -> &'a str {
        self.text.get(start..self.pos).unwrap_or_default()
    }

    /// Skip a `;` comment, up to (not including) the end of the line.
    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    /// An unquoted word: up to white space, `;`, `)` or a control character.
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !(c.is_whitespace() || c.is_control() || c == ';' || c == ')'))
        {
            self.bump();
        }
        self.slice(start)
    }

    /// A quoted string starting at the current `"`; `\` escapes the next character.
    fn quoted(&mut self, entry_line: usize) -> Result<&'a str, SplitError> {
        let start = self.pos;
        self.bump();
        loop {
            match self.bump() {
                Some('"') => return Ok(self.slice(start)),
                Some('\\') if self.bump().is_some() => {}
                Some(_) => {}
                None => return Err(split_error(entry_line, "unterminated quoted string")),
            }
        }
    }

    /// The words of a group, after its `(`, up to and including the `)`.
    fn group(&mut self, entry_line: usize) -> Result<Vec<&'a str>, SplitError> {
        let mut words = Vec::new();
        loop {
            match self.peek() {
                None => return Err(split_error(entry_line, "'(' without a matching ')'")),
                Some(')') => {
                    self.bump();
                    return Ok(words);
                }
                Some(';') => self.skip_comment(),
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some(c) if c.is_control() => return Err(control_char(entry_line, c)),
                Some(_) => words.push(self.word()),
            }
        }
    }
}

fn split_error(line: usize, message: &str) -> SplitError {
    SplitError {
        line,
        message: message.to_owned(),
    }
}

fn control_char(line: usize, c: char) -> SplitError {
    SplitError {
        line,
        message: format!("unexpected control character U+{:04X}", u32::from(c)),
    }
}

/// The entries of a text, one at a time (a zone of a million records is never held as
/// a million entries).
struct Entries<'a> {
    cur: Cursor<'a>,
    failed: bool,
}

impl<'a> Entries<'a> {
    fn new(text: &'a str) -> Entries<'a> {
        Entries {
            cur: Cursor {
                text,
                pos: 0,
                line: 1,
            },
            failed: false,
        }
    }

    fn entry(&mut self) -> Result<Option<Entry<'a>>, SplitError> {
        let cur = &mut self.cur;
        while cur.peek().is_some() {
            let line = cur.line;
            let blank_owner = cur.peek().is_some_and(|c| c.is_whitespace() && c != '\n');
            // Room for a usual record (owner, TTL, class, type, data): one allocation.
            let mut items = Vec::with_capacity(6);
            while let Some(c) = cur.peek() {
                match c {
                    '\n' => {
                        cur.bump();
                        break;
                    }
                    ';' => cur.skip_comment(),
                    c if c.is_whitespace() => {
                        cur.bump();
                    }
                    '(' => {
                        cur.bump();
                        items.push(Item::Group(cur.group(line)?));
                    }
                    ')' => return Err(split_error(line, "')' without a matching '('")),
                    '"' => items.push(Item::Quoted(cur.quoted(line)?)),
                    c if c.is_control() => return Err(control_char(line, c)),
                    _ => items.push(Item::Word(cur.word())),
                }
            }
            if !items.is_empty() {
                return Ok(Some(Entry {
                    line,
                    blank_owner,
                    items,
                }));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, SplitError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.entry().transpose();
        self.failed = matches!(r, Some(Err(_)));
        r
    }
}

// ---------------------------------------------------------------------------------------
// Layer 2: directives, record headers, record data.

/// The state carried from entry to entry (RFC 1035 §5.1, RFC 2308 §4), and the record
/// just read (its owner and RDATA in wire form, in buffers reused from record to record).
struct Reader {
    /// Completes relative names; starts as the zone's origin, changed by `$ORIGIN`.
    origin: Name,
    /// `origin` in wire form, case kept.
    origin_wire: Vec<u8>,
    /// Set by `$TTL`.
    default_ttl: Option<u32>,
    /// The last TTL given explicitly on a record.
    last_ttl: Option<u32>,
    /// The owner of the current (or previous) record, lower-case wire; empty before the
    /// first record.
    owner: Vec<u8>,
    /// The current record's RDATA, uncompressed wire.
    rdata: Vec<u8>,
}

/// What [`Reader::entry`] read besides the owner and RDATA it keeps.
struct Parsed {
    rtype: u16,
    ttl: u32,
    /// The record parsed but could not be written in wire form: why.
    broken: Option<String>,
}

impl Reader {
    fn new(origin: Name) -> Self {
        let mut origin_wire = Vec::new();
        push_wire(&origin, false, &mut origin_wire);
        Self {
            origin,
            origin_wire,
            default_ttl: None,
            last_ttl: None,
            owner: Vec::new(),
            rdata: Vec::new(),
        }
    }

    /// Apply a directive or parse a record (into `owner` and `rdata`).
    fn entry(&mut self, entry: &Entry<'_>) -> Result<Option<Parsed>, String> {
        let mut items = entry.items.iter();
        if entry.blank_owner {
            if self.owner.is_empty() {
                return Err("no owner name: the first record must start with one".to_owned());
            }
        } else {
            match items.next() {
                Some(Item::Word(word)) if word.starts_with('$') => {
                    self.directive(word, items.as_slice())?;
                    return Ok(None);
                }
                Some(Item::Word("@")) => {
                    self.owner.clear();
                    self.owner
                        .extend(self.origin_wire.iter().map(u8::to_ascii_lowercase));
                }
                Some(Item::Word(word)) => {
                    self.owner.clear();
                    if fast_name(word, &self.origin_wire, true, &mut self.owner).is_none() {
                        let name = Name::parse(word, Some(&self.origin))
                            .map_err(|e| format!("invalid owner name '{word}': {e}"))?;
                        push_wire(&name, true, &mut self.owner);
                    }
                }
                Some(item) => return Err(format!("expected an owner name, found {}", show(item))),
                None => return Ok(None),
            }
        }

        // [TTL] [class] type, TTL and class in either order.
        let mut ttl = None;
        let mut class = None;
        let (rtype, type_text) = loop {
            let word = match items.next() {
                Some(Item::Word(word)) => *word,
                Some(item) => {
                    return Err(format!(
                        "expected a TTL, class or record type, found {}",
                        show(item)
                    ))
                }
                None => return Err("missing record type".to_owned()),
            };
            // No allocation for the usual words (a million records are read): a TTL starts
            // with a digit (`parse_ttl` refuses anything else, with an allocated error),
            // words already upper case are not copied, and the common types are no class.
            let upper: Cow<'_, str> = if word.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(word.to_ascii_uppercase())
            } else {
                Cow::Borrowed(word)
            };
            let ttl_value = if word.starts_with(|c: char| c.is_ascii_digit()) {
                parse_ttl(word).ok()
            } else {
                None
            };
            if let Some(value) = ttl_value {
                if ttl.replace(check_ttl(value)?).is_some() {
                    return Err(format!("second TTL '{word}'"));
                }
            } else if let Some(rtype) = common_type(&upper) {
                break (rtype, upper);
            } else if let Ok(value) = DNSClass::from_str(&upper) {
                if value != DNSClass::IN {
                    return Err(format!("class {upper} is not supported (only IN)"));
                }
                if class.replace(value).is_some() {
                    return Err(format!("second class '{word}'"));
                }
            } else if let Ok(rtype) = RecordType::from_str(&upper) {
                break (rtype, upper);
            } else {
                return Err(format!("unknown record type or class '{word}'"));
            }
        };

        let ttl = match ttl {
            Some(ttl) => {
                self.last_ttl = Some(ttl);
                ttl
            }
            None => self
                .default_ttl
                .or(self.last_ttl)
                .ok_or("no TTL: give the record a TTL or set $TTL before it")?,
        };

        if let Some(expected) = field_count(rtype) {
            let found: usize = items
                .as_slice()
                .iter()
                .map(|item| match item {
                    Item::Group(words) => words.len(),
                    Item::Word(_) | Item::Quoted(_) => 1,
                })
                .sum();
            if found != expected {
                // hickory's parser ignores extra fields of these types.
                return Err(format!(
                    "{type_text} record with {found} data fields, expected {expected}"
                ));
            }
        }
        self.rdata.clear();
        let fast = fast_rdata(
            items.as_slice(),
            rtype,
            &self.origin,
            &self.origin_wire,
            &mut self.rdata,
        );
        if fast.is_some() {
            return Ok(Some(Parsed {
                rtype: u16::from(rtype),
                ttl,
                broken: None,
            }));
        }
        let rdata = rdata_text(items.as_slice(), rtype, &self.origin)?;
        let record = parse_record(&type_text, ttl, &rdata, &self.origin)?;
        self.rdata.clear();
        let broken = match emit_rdata(&record.data, &mut self.rdata) {
            Ok(()) if self.rdata.len() > usize::from(u16::MAX) => {
                Some("RDATA longer than 65535 bytes".to_owned())
            }
            Ok(()) => None,
            Err(e) => Some(e),
        };
        Ok(Some(Parsed {
            rtype: u16::from(record.record_type()),
            ttl,
            broken,
        }))
    }

    fn directive(&mut self, word: &str, args: &[Item<'_>]) -> Result<(), String> {
        let directive = word.to_ascii_uppercase();
        let arg = match (directive.as_str(), args) {
            ("$INCLUDE", _) => {
                return Err("$INCLUDE is not supported: a zone must be self-contained".to_owned())
            }
            ("$ORIGIN" | "$TTL", [Item::Word(arg)]) => *arg,
            ("$ORIGIN" | "$TTL", []) => return Err(format!("{directive} needs a value")),
            ("$ORIGIN" | "$TTL", [_, extra, ..]) => {
                return Err(format!("unexpected {} after {directive}", show(extra)))
            }
            ("$ORIGIN" | "$TTL", [item]) => {
                return Err(format!(
                    "{directive} needs a plain value, found {}",
                    show(item)
                ))
            }
            _ => return Err(format!("unknown directive {word}")),
        };
        if directive == "$TTL" {
            let ttl = parse_ttl(arg).map_err(|e| format!("invalid $TTL: {e}"))?;
            self.default_ttl = Some(check_ttl(ttl)?);
        } else {
            // Relative names are completed with the current origin, as BIND does.
            self.origin = Name::parse(arg, Some(&self.origin))
                .map_err(|e| format!("invalid $ORIGIN '{arg}': {e}"))?;
            self.origin.set_fqdn(true);
            self.origin_wire.clear();
            push_wire(&self.origin, false, &mut self.origin_wire);
        }
        Ok(())
    }
}

fn check_ttl(ttl: u32) -> Result<u32, String> {
    if ttl > MAX_TTL {
        Err(format!("TTL {ttl} is larger than {MAX_TTL} (RFC 2181 §8)"))
    } else {
        Ok(ttl)
    }
}

/// The common record types, none of them also a class name (`ANY` is both: it is left to
/// the class first, as before).
fn common_type(upper: &str) -> Option<RecordType> {
    Some(match upper {
        "A" => RecordType::A,
        "AAAA" => RecordType::AAAA,
        "CNAME" => RecordType::CNAME,
        "NS" => RecordType::NS,
        "PTR" => RecordType::PTR,
        "MX" => RecordType::MX,
        "TXT" => RecordType::TXT,
        "SRV" => RecordType::SRV,
        "SOA" => RecordType::SOA,
        "CAA" => RecordType::CAA,
        _ => return None,
    })
}

/// The number of data fields of types with a fixed number of them.
fn field_count(rtype: RecordType) -> Option<usize> {
    match rtype {
        RecordType::A
        | RecordType::AAAA
        | RecordType::CNAME
        | RecordType::NS
        | RecordType::PTR
        | RecordType::ANAME => Some(1),
        RecordType::MX | RecordType::HINFO => Some(2),
        RecordType::CAA => Some(3),
        RecordType::SRV => Some(4),
        RecordType::SOA => Some(7),
        _ => None,
    }
}

/// How an item is named in messages.
fn show(item: &Item<'_>) -> String {
    match item {
        Item::Word(word) => format!("'{word}'"),
        Item::Quoted(text) => format!("quoted string {text}"),
        Item::Group(_) => "'('".to_owned(),
    }
}

/// Record data re-assembled on one line for hickory's parser.
///
/// For types whose data holds only numbers and names, a bare `@` is replaced with the
/// current origin (hickory's parser does not accept `@` there). Quoted strings are
/// re-quoted by [`requote`].
fn rdata_text(items: &[Item<'_>], rtype: RecordType, origin: &Name) -> Result<String, String> {
    let names_only = matches!(
        rtype,
        RecordType::CNAME
            | RecordType::NS
            | RecordType::PTR
            | RecordType::MX
            | RecordType::SRV
            | RecordType::SOA
            | RecordType::ANAME
    );
    let origin = origin.to_string();
    let word = |word: &str| -> String {
        if names_only && word == "@" {
            origin.clone()
        } else {
            word.to_owned()
        }
    };
    let mut text = String::new();
    for item in items {
        match item {
            Item::Word(w) => {
                text.push(' ');
                text.push_str(&word(w));
            }
            Item::Quoted(q) => {
                text.push(' ');
                text.push_str(&requote(q)?);
            }
            Item::Group(words) => {
                text.push_str(" (");
                for w in words {
                    text.push(' ');
                    text.push_str(&word(w));
                }
                text.push_str(" )");
            }
        }
    }
    Ok(text)
}

/// Decode a quoted string's escapes and quote it again with only `\"` and `\\` escaped.
///
/// hickory's lexer decodes `\DDD` wrongly (as `D1 << 16 | D2 << 8 | D3`), so escapes are
/// decoded here as RFC 1035 §5.1 says: `\X` is X, `\DDD` is the octet DDD in decimal.
/// The result must be UTF-8: hickory's text parser carries strings as `str`.
fn requote(raw: &str) -> Result<String, String> {
    let inner = raw
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(raw);
    let mut bytes = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    let mut utf8 = [0; 4];
    while let Some(c) = chars.next() {
        let c = if c == '\\' {
            match chars.next() {
                Some(d1) if d1.is_ascii_digit() => {
                    let digits = [Some(d1), chars.next(), chars.next()];
                    let value = digits.iter().try_fold(0_u32, |value, digit| {
                        digit.and_then(|d| d.to_digit(10)).map(|d| value * 10 + d)
                    });
                    let byte = value.and_then(|value| u8::try_from(value).ok()).ok_or(
                        "invalid escape in a quoted string: \\DDD needs a decimal number up to 255",
                    )?;
                    bytes.push(byte);
                    continue;
                }
                Some(c) => c,
                None => return Err("a quoted string ends with '\\'".to_owned()),
            }
        } else {
            c
        };
        bytes.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| "a quoted string holds bytes that are not UTF-8 (not supported)")?;
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

/// The common one-field types (A, AAAA, CNAME, NS, PTR) read as hickory's parser reads
/// them (`Ipv4Addr`/`Ipv6Addr::from_str`, `Name::parse` against the current origin) but
/// straight to wire form, without a parser or a hickory record per record: a zone of a
/// million records is read several times faster. `None` (nothing written) sends anything
/// else (`@`, escapes, a value that does not parse, for the parser's own message) the
/// general way.
fn fast_rdata(
    items: &[Item<'_>],
    rtype: RecordType,
    origin: &Name,
    origin_wire: &[u8],
    out: &mut Vec<u8>,
) -> Option<()> {
    let [Item::Word(word)] = items else {
        return None;
    };
    match rtype {
        RecordType::A => out.extend(word.parse::<std::net::Ipv4Addr>().ok()?.octets()),
        RecordType::AAAA => out.extend(word.parse::<std::net::Ipv6Addr>().ok()?.octets()),
        RecordType::CNAME | RecordType::NS | RecordType::PTR => {
            if *word == "@" || !word.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
                return None;
            }
            if fast_name(word, origin_wire, false, out).is_none() {
                let name = Name::parse(word, Some(origin)).ok()?;
                push_wire(&name, false, out);
            }
        }
        _ => return None,
    }
    Some(())
}

/// Parse one record with hickory: `@ TTL TYPE RDATA` relative to `origin`.
fn parse_record(rtype: &str, ttl: u32, rdata: &str, origin: &Name) -> Result<Record, String> {
    // DNSSEC records are Meridian's to make (hickory refuses some, parses others).
    if ["DNSKEY", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(rtype.trim()))
    {
        return Err(format!(
            "{} records are made by Meridian, not written in zone text; sign the zone with \
             PUT /api/v1/zones/{origin}/dnssec",
            rtype.trim().to_ascii_uppercase()
        ));
    }
    let text = format!("@ {ttl} {rtype}{rdata}\n");
    // hickory acts on `$INCLUDE` only at the start of a line; the text above is one line
    // outside quoted strings, but make sure.
    if text.contains("\n$") {
        return Err("a line inside a quoted string starts with '$'".to_owned());
    }
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        Parser::new(text.as_str(), None, Some(origin.clone())).parse()
    }))
    .map_err(|_| format!("invalid {rtype} record (the parser panicked)"))?;
    let (_, sets) = parsed.map_err(|e| format!("invalid {rtype} record: {e}"))?;
    let mut records = sets.into_values().flat_map(|set| set.into_iter());
    match (records.next(), records.next()) {
        (Some(record), None) => Ok(record),
        _ => Err(format!("invalid {rtype} record: not exactly one record")),
    }
}

// ---------------------------------------------------------------------------------------
// Zone rules.

/// What has been seen at one owner name, for CNAME exclusivity.
#[derive(Default)]
struct AtName {
    cname: Option<usize>,
    other: Option<(usize, RecordType)>,
}

/// Check the zone rules; `lines[i]` is the line of the `i`th record; `broken` is the
/// first record that could not be written in wire form, and why.
fn validate(
    file: &str,
    zone: &ZoneFile,
    lines: &[u32],
    broken: Option<(usize, String)>,
) -> Result<(), ZoneError> {
    let origin = &zone.origin;
    let mut origin_wire = Vec::new();
    push_wire(origin, true, &mut origin_wire);
    let error = |line: u32, message: String| ZoneError::Record {
        file: file.to_owned(),
        line: line as usize,
        message,
    };
    let mut soa: Option<u32> = None;
    let mut apex_ns = false;
    // CNAME exclusivity only concerns names with a CNAME: only those are kept (Fx, not
    // SipHash: the text is the operator's).
    let mut names: rustc_hash::FxHashMap<&[u8], AtName> = zone
        .rrs()
        .filter(|r| r.rtype == u16::from(RecordType::CNAME))
        .map(|r| (r.owner, AtName::default()))
        .collect();
    // DS only at a delegation point (NS below the apex), checked once all are read.
    let mut ds: Vec<(&[u8], u32)> = Vec::new();
    let mut cuts: rustc_hash::FxHashSet<&[u8]> = Default::default();

    for (i, (rr, &line)) in zone.rrs().zip(lines).enumerate() {
        let owner = rr.owner;
        let rtype = RecordType::from(rr.rtype);
        let name = || show_name(owner);
        if !is_subdomain(owner, &origin_wire) {
            return Err(error(
                line,
                format!("{} is outside the zone {origin}", name()),
            ));
        }
        if let Some((at, why)) = &broken {
            if *at == i {
                return Err(error(line, format!("{rtype} record at {}: {why}", name())));
            }
        }
        if rtype == RecordType::TXT && rr.rdata.is_empty() {
            return Err(error(
                line,
                format!("TXT record at {} without a string", name()),
            ));
        }
        let at_origin = owner == &origin_wire[..];
        match rtype {
            RecordType::SOA if !at_origin => {
                return Err(error(
                    line,
                    format!(
                        "SOA record at {}: it must be at the zone origin {origin}",
                        name()
                    ),
                ));
            }
            RecordType::SOA => {
                if let Some(first) = soa {
                    return Err(error(
                        line,
                        format!("second SOA record (the first is on line {first})"),
                    ));
                }
                soa = Some(line);
            }
            RecordType::NS if at_origin => apex_ns = true,
            RecordType::DNSKEY
            | RecordType::RRSIG
            | RecordType::NSEC
            | RecordType::NSEC3
            | RecordType::NSEC3PARAM => {
                return Err(error(
                    line,
                    format!(
                        "{rtype} record at {}: DNSSEC records are made by Meridian, not \
                         written in zone text; sign the zone with PUT /api/v1/zones/{origin}/dnssec",
                        name()
                    ),
                ));
            }
            RecordType::DS if at_origin => {
                return Err(error(
                    line,
                    format!("DS record at the zone origin {}: a DS belongs in the parent zone, at its delegation", name()),
                ));
            }
            RecordType::DS => ds.push((owner, line)),
            RecordType::NS => {
                cuts.insert(owner);
            }
            _ => {}
        }

        let Some(at) = names.get_mut(owner) else {
            continue;
        };
        let line = line as usize;
        if rtype == RecordType::CNAME {
            if let Some(first) = at.cname {
                return Err(error(
                    line as u32,
                    format!(
                        "second CNAME record at {} (the first is on line {first})",
                        name()
                    ),
                ));
            }
            if let Some((other_line, other_type)) = at.other {
                return Err(error(
                    line as u32,
                    cname_conflict(&name(), "CNAME", other_type, other_line),
                ));
            }
            at.cname = Some(line);
        } else {
            // (RRSIG and NSEC could sit next to a CNAME, but they are not in zone text.)
            if let Some(cname_line) = at.cname {
                return Err(error(
                    line as u32,
                    cname_conflict(&name(), &rtype.to_string(), RecordType::CNAME, cname_line),
                ));
            }
            at.other.get_or_insert((line, rtype));
        }
    }

    if let Some((name, line)) = ds.iter().find(|(n, _)| !cuts.contains(n)) {
        return Err(error(
            *line,
            format!(
                "DS record at {}: a DS must sit at a delegation point (a name with NS records)",
                show_name(name)
            ),
        ));
    }

    let zone_error = |message: String| ZoneError::Zone {
        file: file.to_owned(),
        message,
    };
    if soa.is_none() {
        return Err(zone_error(format!(
            "no SOA record at the zone origin {origin}"
        )));
    }
    if !apex_ns {
        return Err(zone_error(format!(
            "no NS record at the zone origin {origin}"
        )));
    }
    Ok(())
}

fn cname_conflict(name: &str, this: &str, other: RecordType, other_line: usize) -> String {
    format!(
        "{this} record at {name} next to the {other} record on line {other_line}: \
         a CNAME must be alone at its name (RFC 1034 §3.6.2, RFC 2181 §10.1)"
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use hickory_proto::rr::RData;

    use super::*;

    const FILE: &str = "t.zone";

    fn origin() -> Name {
        Name::from_ascii("example.com.").expect("origin")
    }

    fn parse(text: &str) -> Result<ZoneFile, ZoneError> {
        parse_zone(text, FILE, &origin())
    }

    /// The zone's records as hickory's.
    fn recs(zone: &ZoneFile) -> Vec<Record> {
        zone.to_records().expect("records convert")
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    /// Parse text expected to fail; return (line, message).
    fn error(text: &str) -> (Option<usize>, String) {
        match parse(text) {
            Ok(zone) => panic!("expected an error, got {} records", recs(&zone).len()),
            Err(e) => (e.line(), e.to_string()),
        }
    }

    const HEAD: &str = "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\n";

    fn with_head(rest: &str) -> String {
        format!("{HEAD}{rest}")
    }

    fn types(zone: &ZoneFile) -> Vec<RecordType> {
        recs(zone).iter().map(Record::record_type).collect()
    }

    #[test]
    fn good_zone_with_every_supported_type_parses() {
        let text = r#"
$TTL 3600
@       IN SOA   ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 300
@       IN NS    ns1.example.com.
ns1     IN A     192.0.2.1
ns1     IN AAAA  2001:db8::1
@       IN MX    10 mail.example.com.
mail    IN A     192.0.2.25
@       IN TXT   "v=spf1 -all" "second string"
alias   IN CNAME ns1
_sip._udp IN SRV 10 60 5060 sip.example.com.
@       IN CAA   0 issue "letsencrypt.org"
ptr     IN PTR   ns1.example.com.
@       IN SSHFP 1 1 0123456789abcdef0123456789abcdef01234567
_443._tcp IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
@       IN HINFO "cpu" "os"
svc     IN SVCB  1 svc2.example.com. alpn=h2
@       IN HTTPS 1 . alpn=h2
"#;
        let zone = parse(text).expect("valid zone");
        assert_eq!(zone.origin, origin());
        assert_eq!(recs(&zone).len(), 16);
        use RecordType::*;
        let expected = [
            SOA, NS, A, AAAA, MX, A, TXT, CNAME, SRV, CAA, PTR, SSHFP, TLSA, HINFO, SVCB, HTTPS,
        ];
        assert_eq!(types(&zone), expected);
        assert!(recs(&zone).iter().all(|r| r.dns_class == DNSClass::IN));
        match &recs(&zone)[6].data {
            RData::TXT(txt) => {
                let parts: Vec<&[u8]> = txt.txt_data.iter().map(|s| &s[..]).collect();
                assert_eq!(parts, [&b"v=spf1 -all"[..], &b"second string"[..]]);
            }
            other => panic!("not TXT: {other:?}"),
        }
        match &recs(&zone)[7].data {
            RData::CNAME(target) => assert_eq!(target.0, name("ns1.example.com.")),
            other => panic!("not CNAME: {other:?}"),
        }
    }

    #[test]
    fn shipped_example_zone_loads() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones/example.com.zone");
        let zone = load_zone_file(&path).expect("shipped zone is valid");
        assert_eq!(zone.origin, origin());
        assert_eq!(recs(&zone).len(), 21);
        assert_eq!(recs(&zone)[0].record_type(), RecordType::SOA);
        assert_eq!(recs(&zone)[0].ttl, 3600);
        match &recs(&zone)[0].data {
            RData::SOA(soa) => {
                assert_eq!(soa.serial, 2026112501);
                assert_eq!(
                    (soa.refresh, soa.retry, soa.expire, soa.minimum),
                    (7200, 3600, 1209600, 300)
                );
                assert_eq!(soa.mname, name("ns1.example.com."));
                assert_eq!(soa.rname, name("hostmaster.example.com."));
            }
            other => panic!("not SOA: {other:?}"),
        }
        // `www` is a geo service, never defined by the zone.
        let www = name("www.example.com.");
        assert!(recs(&zone).iter().all(|r| r.name != www));
        let wild = name("*.wild.example.com.");
        assert_eq!(recs(&zone).iter().filter(|r| r.name == wild).count(), 2);
        assert!(recs(&zone)[1..].iter().all(|r| r.ttl == 300));
    }

    #[test]
    fn relative_names_origin_and_ttl_directives() {
        let text = "\
@ 600 IN SOA ns1 hostmaster 1 2 3 4 5
  NS ns1
ns1 A 192.0.2.1
$TTL 1h
$ORIGIN sub.example.com.
www A 192.0.2.2
$ORIGIN deeper
x 60 A 192.0.2.3
y A 192.0.2.4
mx MX 5 @
";
        let zone = parse(text).expect("valid zone");
        let owners: Vec<String> = recs(&zone).iter().map(|r| r.name.to_string()).collect();
        assert_eq!(
            owners,
            [
                "example.com.",
                "example.com.",
                "ns1.example.com.",
                "www.sub.example.com.",
                "x.deeper.sub.example.com.",
                "y.deeper.sub.example.com.",
                "mx.deeper.sub.example.com.",
            ]
        );
        let ttls: Vec<u32> = recs(&zone).iter().map(|r| r.ttl).collect();
        // No $TTL yet: the last explicit TTL; then $TTL wins over the last explicit one.
        assert_eq!(ttls, [600, 600, 600, 3600, 60, 3600, 3600]);
        match &recs(&zone)[0].data {
            RData::SOA(soa) => assert_eq!(soa.mname, name("ns1.example.com.")),
            other => panic!("not SOA: {other:?}"),
        }
        match &recs(&zone)[6].data {
            RData::MX(mx) => assert_eq!(mx.exchange, name("deeper.sub.example.com.")),
            other => panic!("not MX: {other:?}"),
        }
        // The zone's origin is the one given, not the last $ORIGIN.
        assert_eq!(zone.origin, origin());
    }

    #[test]
    fn owner_names_are_absolute_and_lower_cased() {
        let zone = parse(&with_head(
            "WWW.Example.COM. A 192.0.2.1\nMiXed A 192.0.2.2\n",
        ))
        .expect("valid zone");
        let owners: Vec<String> = recs(&zone)[2..]
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(owners, ["www.example.com.", "mixed.example.com."]);
        assert!(recs(&zone).iter().all(|r| r.name.is_fqdn()));
        let zone = parse_zone(HEAD, FILE, &name("EXAMPLE.com")).expect("valid zone");
        assert_eq!(zone.origin.to_string(), "example.com.");
    }

    #[test]
    fn records_keep_file_order() {
        let zone = parse(&with_head(
            "b A 192.0.2.2\na A 192.0.2.1\nb AAAA ::1\nb A 192.0.2.3\na TXT x\n",
        ))
        .expect("valid zone");
        let got: Vec<String> = recs(&zone)[2..]
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(
            got,
            [
                "b.example.com. 192.0.2.2",
                "a.example.com. 192.0.2.1",
                "b.example.com. ::1",
                "b.example.com. 192.0.2.3",
                "a.example.com. x",
            ]
        );
    }

    #[test]
    fn duplicate_records_are_dropped() {
        let zone = parse(&with_head(
            "a A 192.0.2.1\na 60 A 192.0.2.1\na A 192.0.2.2\n",
        ))
        .expect("valid zone");
        assert_eq!(recs(&zone).len(), 4);
    }

    #[test]
    fn syntax_error_reports_its_line() {
        let text = "\
$TTL 300
@ IN SOA ns1 hostmaster 1 2 3 4 5
@ IN NS ns1
ns1 A 192.0.2.1
; a comment

bad A 192.0.2.300
ok A 192.0.2.4
ok2 A 192.0.2.5
ok3 A 192.0.2.6
";
        let (line, message) = error(text);
        assert_eq!(line, Some(7));
        assert!(
            message.starts_with("t.zone:7: invalid A record"),
            "{message}"
        );
    }

    #[test]
    fn syntax_error_after_multiline_soa_reports_its_line() {
        let text = "\
$TTL 300
@ IN SOA ns1 hostmaster (
        1 ; serial
        2 ; \"refresh\" (with a paren in the comment
        3 4 5 )
@ IN NS ns1
x BOGUS 1
ok A 192.0.2.4
ok2 A 192.0.2.5
ok3 A 192.0.2.6
";
        let (line, message) = error(text);
        assert_eq!(line, Some(7));
        assert!(message.contains("BOGUS"), "{message}");
    }

    #[test]
    fn multiline_broken_entry_reports_its_first_line() {
        let text = "\
$TTL 300
@ IN SOA ns1 hostmaster 1 2 3 4 5
@ IN NS ns1
a A 192.0.2.1
b A 192.0.2.2
c TXT \"one\"
x MX (
   10
   not..a..name )
ok A 192.0.2.4
";
        assert_eq!(error(text).0, Some(7));
        // A quoted string spanning lines counts its lines.
        let text = with_head("t TXT \"line one\nline two\"\nbad A 1.2.3\n");
        assert_eq!(error(&text).0, Some(6));
    }

    #[test]
    fn unbalanced_parentheses_and_quotes_report_the_entry_line() {
        assert_eq!(
            error(&with_head("a A 192.0.2.1\nx TXT ( \"a\"\nb A 192.0.2.2\n")).0,
            Some(5)
        );
        assert_eq!(error(&with_head("a A 192.0.2.1 )\n")).0, Some(4));
        assert_eq!(
            error(&with_head("\nx TXT \"abc\nb A 192.0.2.2\n")).0,
            Some(5)
        );
        let (_, message) = error(&with_head("x TXT \"abc\\\"\n"));
        assert!(message.contains("unterminated quoted string"), "{message}");
    }

    #[test]
    fn quoted_strings_keep_semicolons_parentheses_and_escaped_quotes() {
        let zone = parse(&with_head(
            "t TXT \"a;b (c)\" \"say \\\"hi\\\"\" ; comment\nu TXT ( one\n two )\n",
        ))
        .expect("valid zone");
        match &recs(&zone)[2].data {
            RData::TXT(txt) => {
                let parts: Vec<&[u8]> = txt.txt_data.iter().map(|s| &s[..]).collect();
                assert_eq!(parts, [&b"a;b (c)"[..], &b"say \"hi\""[..]]);
            }
            other => panic!("not TXT: {other:?}"),
        }
        match &recs(&zone)[3].data {
            RData::TXT(txt) => assert_eq!(txt.txt_data.len(), 2),
            other => panic!("not TXT: {other:?}"),
        }
    }

    #[test]
    fn wrong_number_of_data_fields_is_an_error() {
        for bad in [
            "a A 192.0.2.1 192.0.2.2",
            "a AAAA ::1 junk",
            "a CNAME b c",
            "a MX 10 b c",
            "a MX 10",
            "a NS b c",
            "a PTR b c",
            "a SRV 1 2 3 b c",
            "a CAA 0 issue x y",
            "@ SOA ns1 hm ( 1 2 3 4 5 6 )",
        ] {
            let (line, message) = error(&with_head(&format!("{bad}\n")));
            assert_eq!(line, Some(4), "{bad}");
            assert!(message.contains("data fields"), "{message}");
        }
    }

    #[test]
    fn records_that_cannot_be_encoded_are_errors() {
        let long = "x".repeat(256);
        let (line, message) = error(&with_head(&format!("t TXT ok \"{long}\"\n")));
        assert_eq!(line, Some(4));
        assert!(message.contains("255"), "{message}");
        assert!(parse(&with_head(&format!("t TXT \"{}\"\n", &long[1..]))).is_ok());
        assert_eq!(error(&with_head("t TXT\n")).0, Some(4));
    }

    #[test]
    fn quoted_string_escapes_are_decimal_octets() {
        let zone =
            parse(&with_head(r#"t TXT "\065\\\"x" "caf\195\169" "\;""#)).expect("valid zone");
        match &recs(&zone)[2].data {
            RData::TXT(txt) => {
                let parts: Vec<&[u8]> = txt.txt_data.iter().map(|s| &s[..]).collect();
                assert_eq!(parts, [&b"A\\\"x"[..], "café".as_bytes(), &b";"[..]]);
            }
            other => panic!("not TXT: {other:?}"),
        }
        for bad in [r#""\256""#, r#""\12""#, r#""\255""#] {
            let (line, message) = error(&with_head(&format!("t TXT {bad}\n")));
            assert_eq!(line, Some(4), "{bad}");
            assert!(message.contains("quoted string"), "{message}");
        }
    }

    #[test]
    fn include_is_refused_with_its_line() {
        for include in [
            "$INCLUDE /etc/hostname\n",
            "$INCLUDE other.zone sub\n",
            "$include /etc/hostname\n",
        ] {
            let (line, message) = error(&with_head(include));
            assert_eq!(line, Some(4), "{include}");
            assert!(message.contains("$INCLUDE is not supported"), "{message}");
        }
        // hickory would act on this one (a directive right after a $TTL value).
        let (line, message) = error("$TTL 300 $INCLUDE /etc/hostname\n");
        assert_eq!(line, Some(1));
        assert!(message.contains("$INCLUDE"), "{message}");
        // Not at the start of a line, it is not a directive either.
        assert!(parse(&with_head(" $INCLUDE /etc/hostname\n")).is_err());
    }

    #[test]
    fn bad_directives_are_errors() {
        assert_eq!(
            error(&with_head("$GENERATE 1-3 x$ A 192.0.2.$\n")).0,
            Some(4)
        );
        assert_eq!(error(&with_head("$TTL\n")).0, Some(4));
        assert_eq!(error(&with_head("$TTL 1 2\n")).0, Some(4));
        assert_eq!(error(&with_head("$TTL forever\n")).0, Some(4));
        assert_eq!(error(&with_head("$ORIGIN \"x\"\n")).0, Some(4));
    }

    #[test]
    fn empty_text_is_an_error() {
        for text in ["", "\n\n", "; only a comment\n"] {
            let err = parse(text).expect_err("no SOA");
            assert_eq!(err.line(), None);
            assert_eq!(
                err.to_string(),
                "t.zone: no SOA record at the zone origin example.com."
            );
        }
    }

    #[test]
    fn missing_soa_is_an_error() {
        let err = parse("$TTL 300\n@ NS ns1\n").expect_err("no SOA");
        assert!(matches!(err, ZoneError::Zone { .. }), "{err}");
    }

    #[test]
    fn second_soa_is_an_error() {
        let (line, message) = error(&with_head("@ SOA ns2 hostmaster 2 7200 3600 1209600 300\n"));
        assert_eq!(line, Some(4));
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn soa_not_at_origin_is_an_error() {
        let (line, message) = error(&with_head("sub SOA ns1 hostmaster 1 2 3 4 5\n"));
        assert_eq!(line, Some(4));
        assert!(message.contains("must be at the zone origin"), "{message}");
    }

    #[test]
    fn missing_ns_at_origin_is_an_error() {
        let err = parse("$TTL 300\n@ SOA ns1 hostmaster 1 2 3 4 5\nsub NS ns1.sub\n")
            .expect_err("no apex NS");
        assert_eq!(err.line(), None);
        assert_eq!(
            err.to_string(),
            "t.zone: no NS record at the zone origin example.com."
        );
    }

    #[test]
    fn out_of_zone_owner_is_an_error() {
        let (line, message) = error(&with_head("ok A 192.0.2.1\nwww.example.org. A 192.0.2.1\n"));
        assert_eq!(line, Some(5));
        assert!(message.contains("outside the zone"), "{message}");
        assert_eq!(
            error(&with_head("$ORIGIN example.net.\nwww A 192.0.2.1\n")).0,
            Some(5)
        );
        // The parent of the origin, and a sibling that shares its suffix.
        assert!(parse(&with_head("com. A 192.0.2.1\n")).is_err());
        assert!(parse(&with_head("badexample.com. A 192.0.2.1\n")).is_err());
    }

    #[test]
    fn cname_and_other_data_is_an_error() {
        let (line, message) = error(&with_head("a CNAME b\nx A 192.0.2.1\na A 192.0.2.1\n"));
        assert_eq!(line, Some(6));
        assert!(message.contains("CNAME record on line 4"), "{message}");
        let (line, message) = error(&with_head("a TXT hi\na CNAME b\n"));
        assert_eq!(line, Some(5));
        assert!(message.contains("TXT record on line 4"), "{message}");
        // At the origin, a CNAME conflicts with the SOA and NS.
        assert_eq!(error(&with_head("@ CNAME b\n")).0, Some(4));
    }

    #[test]
    fn second_cname_at_a_name_is_an_error() {
        let (line, message) = error(&with_head("a CNAME b\na CNAME c\n"));
        assert_eq!(line, Some(5));
        assert!(message.contains("second CNAME"), "{message}");
    }

    #[test]
    fn only_class_in_is_accepted() {
        for class in ["CH", "HS", "ANY", "NONE"] {
            let (line, message) = error(&with_head(&format!("a {class} A 192.0.2.1\n")));
            assert_eq!(line, Some(4));
            assert!(message.contains("only IN"), "{message}");
        }
        assert!(parse(&with_head("a 60 in A 192.0.2.1\nb IN 60 A 192.0.2.1\n")).is_ok());
    }

    #[test]
    fn ds_and_unknown_types_are_rejected() {
        // DS only at a delegation point.
        let (line, message) = error(&with_head(
            "sub DS 60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118\n",
        ));
        assert_eq!(line, Some(4));
        assert!(message.contains("delegation"), "{message}");
        let ok = parse(&with_head(
            "sub NS ns.elsewhere.\nsub DS 60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118\n",
        ));
        assert!(ok.is_ok(), "{ok:?}");
        let (line, message) = error(&with_head(
            "@ DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n",
        ));
        assert_eq!(line, Some(4));
        assert!(message.contains("/dnssec"), "{message}");
        assert_eq!(error(&with_head("a TYPE65534 \\# 0\n")).0, Some(4));
        assert_eq!(error(&with_head("a NOSUCHTYPE x\n")).0, Some(4));
        assert_eq!(error(&with_head("a DNAME b\n")).0, Some(4));
    }

    #[test]
    fn missing_ttl_and_owner_are_errors() {
        let (line, message) = error("@ IN SOA ns1 hostmaster 1 2 3 4 5\n");
        assert_eq!(line, Some(1));
        assert!(message.contains("no TTL"), "{message}");
        let (line, message) = error("  A 192.0.2.1\n");
        assert_eq!(line, Some(1));
        assert!(message.contains("no owner"), "{message}");
        assert_eq!(error(&with_head("lonely\n")).0, Some(4));
    }

    #[test]
    fn huge_ttls_are_errors() {
        assert_eq!(error(&with_head("a 2147483648 A 192.0.2.1\n")).0, Some(4));
        assert_eq!(error(&with_head("a 99999999999 A 192.0.2.1\n")).0, Some(4));
        assert_eq!(error("$TTL 4294967295\n").0, Some(1));
        assert!(parse(&with_head("a 2147483647 A 192.0.2.1\n")).is_ok());
    }

    #[test]
    fn too_long_names_and_labels_are_errors() {
        let label = "a".repeat(64);
        assert_eq!(
            error(&with_head(&format!("{label} A 192.0.2.1\n"))).0,
            Some(4)
        );
        let long = vec!["abcdefghi"; 30].join(".");
        assert_eq!(
            error(&with_head(&format!("{long} A 192.0.2.1\n"))).0,
            Some(4)
        );
        assert_eq!(error(&with_head(&format!("a CNAME {long}\n"))).0, Some(4));
    }

    #[test]
    fn at_sign_in_data_means_the_origin() {
        let zone = parse(&with_head(
            "$ORIGIN sub.example.com.\nwww CNAME @\n@ MX ( 10 @ )\n",
        ))
        .expect("valid zone");
        match &recs(&zone)[2].data {
            RData::CNAME(target) => assert_eq!(target.0, name("sub.example.com.")),
            other => panic!("not CNAME: {other:?}"),
        }
        match &recs(&zone)[3].data {
            RData::MX(mx) => assert_eq!(mx.exchange, name("sub.example.com.")),
            other => panic!("not MX: {other:?}"),
        }
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let text = HEAD.replace('\n', "\r\n") + "a A 192.0.2.1\r\nbad A x\r\n";
        assert_eq!(error(&text).0, Some(5));
        assert!(parse(&HEAD.replace('\n', "\r\n")).is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        let garbage: Vec<String> = vec![
            "(".into(),
            ")".into(),
            "((((".into(),
            "@ SOA ( ( ( )".into(),
            "\"".into(),
            "a TXT \"unterminated".into(),
            "a TXT \"\\".into(),
            "a TXT \"\\1\"".into(),
            "a TXT \"\\999\"".into(),
            "a TXT ( \"a ; b\" )".into(),
            "$".into(),
            "$TTL".into(),
            "$ORIGIN".into(),
            "$TTL 99999999999999999999999".into(),
            "a 4294967296 A 1.2.3.4".into(),
            "a 9999999w A 1.2.3.4".into(),
            "@ @ @ @".into(),
            "\\".into(),
            "a\\".into(),
            "a\\0".into(),
            "\\999 A 1.2.3.4".into(),
            "\0\0\0".into(),
            "a\rb A 1.2.3.4".into(),
            "..".into(),
            ". A 1.2.3.4".into(),
            "a..b A 1.2.3.4".into(),
            "a SOA".into(),
            "a SOA 1 2 3".into(),
            "a MX 99999 b".into(),
            "a SRV 1 2 99999 b".into(),
            "a CAA 999 issue x".into(),
            "a CAA 0 issue".into(),
            "a SVCB 1 . alpn".into(),
            "a SVCB 1 . port=99999999".into(),
            "a HTTPS 1 . ech=!!!".into(),
            "a SVCB 1 . key65535=\"".into(),
            "a TLSA 1 1 1 zz".into(),
            "a SSHFP 1 1 z".into(),
            "a CERT 1 1 1 !!".into(),
            "a OPENPGPKEY !!!".into(),
            "a CSYNC 1 2 A NOPE".into(),
            "a NULL x".into(),
            "a ANY x".into(),
            "a OPT x".into(),
            "a AXFR x".into(),
            "a TXT".into(),
            "a A".into(),
            "a A ( )".into(),
            format!("{} A 1.2.3.4", "a".repeat(64)),
            format!("{} A 1.2.3.4", vec!["a"; 200].join(".")),
            format!("a CNAME {}", vec!["abc"; 100].join(".")),
            format!("$ORIGIN {}", vec!["abc"; 100].join(".")),
            "a TXT \"".to_string() + &"x".repeat(300) + "\"",
        ];
        for text in &garbage {
            assert!(parse(text).is_err(), "accepted: {text:?}");
            assert!(parse(&with_head(text)).is_err(), "accepted: {text:?}");
        }

        // Pseudo-random bytes, as lossy UTF-8; and mostly-printable zone-ish noise after a
        // valid head, which gets further into the parser (and may even be valid).
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        };
        let alphabet = b" ()\";\\\n\t@$.*0123456789abcAMXTNSOQ";
        for len in [1usize, 7, 31, 100, 500, 2000] {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..len).map(|_| next()).collect();
                let text = String::from_utf8_lossy(&bytes);
                assert!(parse(&text).is_err(), "accepted: {text:?}");
                let noise: String = bytes
                    .iter()
                    .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
                    .collect();
                let _ = parse(&with_head(&noise));
            }
        }
    }

    #[test]
    fn error_display_and_line() {
        let err = ZoneError::Syntax {
            file: "z.zone".into(),
            line: 7,
            message: "bad".into(),
        };
        assert_eq!(err.to_string(), "z.zone:7: bad");
        assert_eq!(err.line(), Some(7));
        assert_eq!(err.file(), "z.zone");
        let err = ZoneError::Zone {
            file: "z.zone".into(),
            message: "no SOA".into(),
        };
        assert_eq!(err.to_string(), "z.zone: no SOA");
        assert_eq!(err.line(), None);
        let err = load_zone_file(Path::new("/nonexistent/dir/x.zone")).expect_err("missing");
        assert!(
            err.to_string().starts_with("/nonexistent/dir/x.zone: "),
            "{err}"
        );
        assert_eq!(err.line(), None);
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "meridian-zone-{tag}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("write");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn load_zone_file_takes_the_origin_from_the_file_name() {
        let dir = TempDir::new("file");
        let path = dir.write(
            "Example.ORG.zone",
            "$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n",
        );
        let zone = load_zone_file(&path).expect("valid zone");
        assert_eq!(zone.origin.to_string(), "example.org.");
        assert_eq!(recs(&zone)[2].name.to_string(), "ns.example.org.");

        let path = dir.write("example.org", "");
        let err = load_zone_file(&path).expect_err("not NAME.zone");
        assert!(
            err.to_string().contains("not of the form NAME.zone"),
            "{err}"
        );
        let path = dir.write(
            "bad.zone",
            "$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nx A nope\n",
        );
        let err = load_zone_file(&path).expect_err("broken");
        let prefix = format!("{}:4: invalid A record", path.display());
        assert!(err.to_string().starts_with(&prefix), "{err}");
        assert_eq!(err.line(), Some(4));
    }

    #[test]
    fn load_zone_dir_sorts_and_collects_every_error() {
        let dir = TempDir::new("dir");
        let good = "$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n";
        dir.write("b.test.zone", good);
        dir.write("a.test.zone", good);
        dir.write(
            "broken1.zone",
            "$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nx A nope\n",
        );
        dir.write("broken2.zone", "");
        dir.write("notes.txt", "not a zone");
        dir.write(".hidden.zone", "not a zone");

        let errors = load_zone_dir(&dir.0).expect_err("two broken files");
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].to_string().contains("broken1.zone:4: "),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].to_string().contains("broken2.zone: no SOA"),
            "{}",
            errors[1]
        );

        std::fs::remove_file(dir.0.join("broken1.zone")).expect("rm");
        std::fs::remove_file(dir.0.join("broken2.zone")).expect("rm");
        let zones = load_zone_dir(&dir.0).expect("all good");
        let origins: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
        assert_eq!(origins, ["a.test.", "b.test."]);

        // Two files for one zone.
        dir.write("A.test.zone", good);
        let errors = load_zone_dir(&dir.0).expect_err("duplicate origin");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("already loaded"),
            "{}",
            errors[0]
        );

        let errors = load_zone_dir(&dir.0.join("missing")).expect_err("no dir");
        assert_eq!(errors.len(), 1);
    }

    /// A parsed zone holds its records' wire bytes and a 16-byte slot per record, nothing
    /// per record on the heap (issue 9: a million-record zone).
    #[test]
    fn the_store_costs_its_wire_bytes_and_16_bytes_a_record() {
        let mut text = with_head("ns1 A 192.0.2.1\n");
        for i in 0..10_000 {
            text.push_str(&format!("h{i} A 192.0.2.{}\n", i % 250));
            if i % 10 == 0 {
                text.push_str(&format!("c{i} CNAME h{i}\n"));
            }
        }
        let zone = parse(&text).expect("zone");
        assert_eq!(zone.len(), 11_003);
        let wire: usize = zone.rrs().map(|r| r.owner.len() + r.rdata.len()).sum();
        assert!(
            zone.heap_bytes() <= wire + 16 * zone.len(),
            "{} bytes for {} records of {wire} wire bytes",
            zone.heap_bytes(),
            zone.len()
        );
        let c = zone.get(4).expect("the first CNAME");
        assert_eq!(c.owner, b"\x02c0\x07example\x03com\x00");
        assert_eq!(c.rdata, b"\x02h0\x07example\x03com\x00");
        assert_eq!((c.rtype, c.ttl), (5, 300));
    }

    /// The fast path reads the one-field types exactly as hickory's parser does, in wire
    /// form; owners too.
    #[test]
    fn fast_path_reads_as_the_parser_does() {
        let origin = Name::from_ascii("example.com.").expect("origin");
        let mut origin_wire = Vec::new();
        push_wire(&origin, false, &mut origin_wire);
        let cases = [
            ("A", "192.0.2.1"),
            ("AAAA", "2001:db8::1"),
            ("AAAA", "::ffff:192.0.2.1"),
            ("CNAME", "www"),
            ("CNAME", "www.example.net."),
            ("CNAME", "Mixed.Case"),
            ("CNAME", "MIXED.Example.NET."),
            ("NS", "ns1.example.com."),
            ("NS", "ns1"),
            ("PTR", "host.example.org."),
            ("PTR", "1.2.0.192.in-addr.arpa."),
            ("CNAME", "*.wild"),
            ("CNAME", "_sip._tcp"),
            ("CNAME", "_Sip._TCP.Example.com."),
            ("CNAME", "xn--bcher-kva.example."),
            ("CNAME", "a--b.c-d"),
            ("CNAME", "-a.b"),
            ("CNAME", "a-.b"),
            ("CNAME", "a-b_c.d"),
            ("CNAME", "."),
        ];
        for (rtype, data) in cases {
            let rt = RecordType::from_str(rtype).expect("type");
            let mut fast = Vec::new();
            let taken =
                fast_rdata(&[Item::Word(data)], rt, &origin, &origin_wire, &mut fast).is_some();
            match parse_record(rtype, 300, &format!(" {data}"), &origin) {
                Ok(slow) => {
                    assert!(taken, "fast path not taken for {rtype} {data}");
                    let mut wire = Vec::new();
                    emit_rdata(&slow.data, &mut wire).expect("emits");
                    assert_eq!(fast, wire, "{rtype} {data}");
                }
                Err(_) => assert!(!taken && fast.is_empty(), "{rtype} {data}"),
            }
        }
        // Left to the parser (its messages, its rules).
        for (rtype, data) in [
            ("A", "192.0.2"),
            ("A", "::1"),
            ("CNAME", "@"),
            ("CNAME", "a\\.b"),
            ("CNAME", "a-b_c.d"),
            ("MX", "10"),
        ] {
            let rt = RecordType::from_str(rtype).expect("type");
            let mut out = Vec::new();
            assert!(
                fast_rdata(&[Item::Word(data)], rt, &origin, &origin_wire, &mut out).is_none(),
                "{rtype} {data}"
            );
        }
        // Owners: as `Name::parse` and `to_lowercase` make them.
        for word in [
            "www",
            "WWW.Example.COM.",
            "_sip._tcp",
            "_SIP._TCP",
            "*",
            "*.Wild",
            "a--b",
            "h123",
            "xn--bcher-kva",
            "-a",
            "a_b",
            "a.b.c.d.e.f",
        ] {
            let mut fast = Vec::new();
            let taken = fast_name(word, &origin_wire, true, &mut fast).is_some();
            match Name::parse(word, Some(&origin)) {
                Ok(name) => {
                    let mut wire = Vec::new();
                    push_wire(&name.to_lowercase(), false, &mut wire);
                    if taken {
                        assert_eq!(fast, wire, "{word}");
                    }
                }
                Err(_) => assert!(!taken, "{word}"),
            }
        }
    }
}
