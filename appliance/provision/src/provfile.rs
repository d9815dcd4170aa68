//! `popseed.toml`, the one file the event team edits: its model ([`Provisioning`]) and its
//! validation, which walks the span-keeping toml_edit tree so that EVERY problem is reported at
//! once with its line and column (a TOML syntax error is one problem at its position).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;

use ipnet::Ipv4Net;
use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::diag::Diagnostic;
use crate::profile::{Band, HwProfile};

/// Wi-Fi security of the venue network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Open,
    Wpa2,
    Wpa3,
    Wpa2Wpa3,
}

impl Security {
    fn parse(s: &str) -> Option<Security> {
        match s {
            "open" => Some(Security::Open),
            "wpa2" => Some(Security::Wpa2),
            "wpa3" => Some(Security::Wpa3),
            "wpa2-wpa3" => Some(Security::Wpa2Wpa3),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WifiSettings {
    pub ssid: String,
    pub passphrase: Option<String>,
    pub security: Security,
    pub country: String,
    pub channel: u8,
    pub band: Band,
    pub hidden: bool,
    pub max_clients: u16,
}

#[derive(Debug, Clone)]
pub struct PortalSettings {
    /// The box's address on the Wi-Fi, with the prefix DHCP hands out.
    pub address: Ipv4Net,
    pub box_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Management {
    pub listen: SocketAddr,
    pub staff_token: String,
    /// The staff interface (e.g. a staff VLAN `eth0.42`); `None`: the uplink's interface.
    /// The management port is reachable there only, never on the access point.
    pub interface: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Origin {
    pub name: Option<String>,
    pub address: SocketAddr,
    pub fingerprint: String,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkMode {
    Dhcp,
    Static { address: Ipv4Net, gateway: Option<Ipv4Addr>, dns: Vec<IpAddr> },
}

#[derive(Debug, Clone)]
pub struct Uplink {
    pub interface: String,
    pub mode: UplinkMode,
}

/// A valid provisioning file.
#[derive(Debug, Clone)]
pub struct Provisioning {
    pub venue: String,
    pub device_name: Option<String>,
    pub trusted_keys: Vec<String>,
    pub wifi: WifiSettings,
    pub portal: PortalSettings,
    pub management: Management,
    pub origins: Vec<Origin>,
    pub uplink: Option<Uplink>,
    /// `[store] budget` in bytes.
    pub store_budget: Option<u64>,
}

/// The outcome of validating a file: the model when there is no error, else every error; and
/// what could be read of the management section either way (the setup fallback uses it).
#[derive(Debug, Clone)]
pub struct Validation {
    pub value: Option<Provisioning>,
    pub errors: Vec<Diagnostic>,
    pub management_listen: Option<SocketAddr>,
    pub staff_token: Option<String>,
}

pub const DEFAULT_MANAGEMENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
pub const DEFAULT_CHANNEL: u8 = 6;

/// ISO 3166-1 alpha-2 codes (officially assigned).
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS \
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK \
FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM \
JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS \
MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW \
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM \
US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

pub fn is_country(code: &str) -> bool {
    code.len() == 2 && COUNTRIES.split(' ').any(|c| c == code)
}

/// The band a channel number belongs to, if it is a channel an AP may use at all.
pub fn channel_band(ch: i64) -> Option<Band> {
    match ch {
        1..=14 => Some(Band::Ghz2_4),
        36..=64 | 100..=144 | 149..=177 if (ch - 36) % 4 == 0 || (ch >= 149 && (ch - 149) % 4 == 0) => Some(Band::Ghz5),
        _ => None,
    }
}

const TOP_KEYS: &[&str] =
    &["venue", "device_name", "trusted_keys", "wifi", "portal", "management", "origins", "uplink", "store"];
const WIFI_KEYS: &[&str] = &["ssid", "passphrase", "security", "country", "channel", "band", "hidden", "max_clients"];
const PORTAL_KEYS: &[&str] = &["address", "box_name"];
const MGMT_KEYS: &[&str] = &["listen", "staff_token", "interface"];
const ORIGIN_KEYS: &[&str] = &["name", "address", "fingerprint", "server_name"];
const UPLINK_KEYS: &[&str] = &["interface", "mode", "address", "gateway", "dns"];
const STORE_KEYS: &[&str] = &["budget"];

type Span = Option<Range<usize>>;

/// A table of the document, as a regular `[table]` or an inline `{ ... }` table.
struct Tbl<'a> {
    t: &'a dyn TableLike,
    span: Span,
    path: String,
}

struct Checker<'a> {
    text: &'a str,
    errors: Vec<Diagnostic>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "an inline table",
        },
    }
}

/// Levenshtein distance, for "did you mean" hints on misspelt keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl<'a> Checker<'a> {
    fn err(&mut self, span: &Span, key: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(Diagnostic::at(self.text, span.as_ref().map(|r| r.start), key, msg));
    }

    /// The table at `key` of `parent` (None and an error when it has another type; None and an
    /// error when missing and `required`). Unknown keys inside are reported.
    fn table(&mut self, parent: &Tbl<'a>, key: &str, allowed: &[&str], required: bool) -> Option<Tbl<'a>> {
        let path = join(&parent.path, key);
        let Some((k, item)) = parent.t.get_key_value(key) else {
            if required {
                self.err(&parent.span, path, format!("missing: add a [{key}] section"));
            }
            return None;
        };
        let tbl = match item {
            Item::Table(t) => Tbl { t, span: t.span().or_else(|| k.span()), path },
            Item::Value(Value::InlineTable(t)) => Tbl { t, span: t.span().or_else(|| k.span()), path },
            other => {
                let span = other.span().or_else(|| k.span());
                self.err(&span, path, format!("expected a table, found {}", type_name(other)));
                return None;
            }
        };
        self.unknown_keys(&tbl, allowed);
        Some(tbl)
    }

    fn unknown_keys(&mut self, tbl: &Tbl<'a>, allowed: &[&str]) {
        let keys: Vec<String> = tbl.t.iter().map(|(k, _)| k.to_owned()).collect();
        for key in keys {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let span = tbl.t.get_key_value(&key).and_then(|(k, _)| k.span()).or_else(|| tbl.span.clone());
            let hint = allowed
                .iter()
                .map(|a| (distance(&key, a), *a))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, a)| format!(" (did you mean `{a}`?)"))
                .unwrap_or_default();
            let section =
                if tbl.path.is_empty() { "at the top level".to_owned() } else { format!("in [{}]", tbl.path) };
            self.err(&span, join(&tbl.path, &key), format!("unknown key {section}{hint}"));
        }
    }

    /// The value at `key` with its span; errors when missing and required.
    fn value(&mut self, tbl: &Tbl<'a>, key: &str, required: bool) -> Option<(&'a Item, Span)> {
        match tbl.t.get_key_value(key) {
            Some((k, item)) => Some((item, item.span().or_else(|| k.span()))),
            None => {
                if required {
                    let where_ =
                        if tbl.path.is_empty() { "the top level".to_owned() } else { format!("[{}]", tbl.path) };
                    self.err(&tbl.span, join(&tbl.path, key), format!("missing: add `{key} = ...` to {where_}"));
                }
                None
            }
        }
    }

    fn string(&mut self, tbl: &Tbl<'a>, key: &str, required: bool) -> Option<(String, Span)> {
        let (item, span) = self.value(tbl, key, required)?;
        match item.as_str() {
            Some(s) => Some((s.to_owned(), span)),
            None => {
                self.err(&span, join(&tbl.path, key), format!("expected a string, found {}", type_name(item)));
                None
            }
        }
    }

    fn integer(&mut self, tbl: &Tbl<'a>, key: &str) -> Option<(i64, Span)> {
        let (item, span) = self.value(tbl, key, false)?;
        match item.as_integer() {
            Some(n) => Some((n, span)),
            None => {
                self.err(&span, join(&tbl.path, key), format!("expected an integer, found {}", type_name(item)));
                None
            }
        }
    }

    fn boolean(&mut self, tbl: &Tbl<'a>, key: &str) -> Option<bool> {
        let (item, span) = self.value(tbl, key, false)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.err(&span, join(&tbl.path, key), format!("expected true or false, found {}", type_name(item)));
                None
            }
        }
    }

    /// An array of strings, each with its span (errors for non-string elements).
    fn strings(&mut self, tbl: &Tbl<'a>, key: &str) -> Vec<(String, Span, String)> {
        let Some((item, span)) = self.value(tbl, key, false) else { return vec![] };
        let Some(arr) = item.as_array() else {
            self.err(&span, join(&tbl.path, key), format!("expected an array of strings, found {}", type_name(item)));
            return vec![];
        };
        let mut out = Vec::new();
        for (i, v) in arr.iter().enumerate() {
            let path = format!("{}[{i}]", join(&tbl.path, key));
            match v.as_str() {
                Some(s) => out.push((s.to_owned(), v.span(), path)),
                None => self.err(&v.span(), path, "expected a string"),
            }
        }
        out
    }
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Validates `text` (a `popseed.toml`) against the board `profile`.
pub fn validate(text: &str, profile: &HwProfile) -> Validation {
    let mut c = Checker { text, errors: Vec::new() };
    let doc = match ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.message().trim().to_owned();
            let start = e.span().map(|r| r.start);
            return Validation {
                value: None,
                errors: vec![Diagnostic::at(text, start, "", format!("TOML syntax error: {msg}"))],
                management_listen: None,
                staff_token: None,
            };
        }
    };
    let root = Tbl { t: doc.as_table(), span: Some(0..0), path: String::new() };
    c.unknown_keys(&root, TOP_KEYS);

    let venue = c.string(&root, "venue", true).and_then(|(v, span)| {
        if v.trim().is_empty() || v.chars().count() > 64 || !printable(&v) {
            c.err(&span, "venue", "must be 1..64 characters without control characters");
            None
        } else {
            Some(v)
        }
    });
    let device_name = c.string(&root, "device_name", false).and_then(|(v, span)| {
        let ok = !v.is_empty()
            && v.len() <= 63
            && v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || ch == '.');
        if !ok {
            c.err(&span, "device_name", "must be 1..63 letters, digits, '-', '_' or '.'");
        }
        ok.then_some(v)
    });
    let mut trusted_keys = Vec::new();
    let mut bad_keys = false;
    for (k, span, path) in c.strings(&root, "trusted_keys") {
        match popseed_release::PublicKey::from_text(&k) {
            Ok(_) => trusted_keys.push(k),
            Err(e) => {
                bad_keys = true;
                c.err(
                    &span,
                    path,
                    format!("not a publisher key (`ed25519:` + 32 bytes base64url): {}", popseed_core::chain(&e)),
                )
            }
        }
    }
    if trusted_keys.is_empty() && !bad_keys {
        // fail closed: a box that trusts no publisher would refuse every release anyway
        let span = c.value(&root, "trusted_keys", false).map(|(_, s)| s).unwrap_or_else(|| root.span.clone());
        c.err(
            &span,
            "trusted_keys",
            "name at least one publisher key (`popseed keygen` prints it): without one the box refuses every release",
        );
    }

    let wifi = c.table(&root, "wifi", WIFI_KEYS, true).and_then(|t| check_wifi(&mut c, &t, profile));
    let portal = c.table(&root, "portal", PORTAL_KEYS, true).and_then(|t| check_portal(&mut c, &t));

    let mut management_listen = None;
    let mut staff_token = None;
    let management = c.table(&root, "management", MGMT_KEYS, true).and_then(|t| {
        let listen = match c.string(&t, "listen", false) {
            None => Some(DEFAULT_MANAGEMENT),
            Some((s, span)) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    c.err(&span, "management.listen", format!("{s:?} is not an IP:port address"));
                    None
                }
            },
        };
        management_listen = listen;
        let token = c.string(&t, "staff_token", true).and_then(|(s, span)| {
            if s.chars().count() < 16 || !printable(&s) || s.trim() != s {
                c.err(
                    &span,
                    "management.staff_token",
                    "must be at least 16 characters, no spaces around it, no control characters",
                );
                None
            } else {
                Some(s)
            }
        });
        staff_token = token.clone();
        let interface = match c.string(&t, "interface", false) {
            None => Some(None),
            Some((s, span)) if interface_name_ok(&s) => {
                let _ = span;
                Some(Some(s))
            }
            Some((s, span)) => {
                c.err(&span, "management.interface", format!("{s:?} is not a network interface name"));
                None
            }
        };
        Some(Management { listen: listen?, staff_token: token?, interface: interface? })
    });

    let origins = check_origins(&mut c, &root);
    let uplink = match c.table(&root, "uplink", UPLINK_KEYS, false) {
        Some(t) => check_uplink(&mut c, &t, profile).map(Some),
        None => Some(None),
    };
    let store_budget = match c.table(&root, "store", STORE_KEYS, false) {
        Some(t) => match c.value(&t, "budget", false) {
            None => Some(None),
            Some((item, span)) => {
                let parsed = if let Some(n) = item.as_integer() {
                    u64::try_from(n).ok()
                } else if let Some(s) = item.as_str() {
                    s.parse::<popseed_core::ByteSize>().ok().map(popseed_core::ByteSize::get)
                } else {
                    None
                };
                match parsed {
                    Some(n) if n > 0 => Some(Some(n)),
                    _ => {
                        c.err(&span, "store.budget", "must be a size like \"400GiB\" or a positive number of bytes");
                        None
                    }
                }
            }
        },
        None => Some(None),
    };

    if let (Some(w), Some(u)) = (&wifi, uplink.as_ref().and_then(|u| u.as_ref())) {
        if w.0 == u.interface {
            // both names come from the board profile or the file; report on the uplink table
            let span = root.t.get_key_value("uplink").and_then(|(k, _)| k.span());
            c.err(&span, "uplink.interface", format!("{} is the Wi-Fi AP interface", u.interface));
        }
    }

    let errors = std::mem::take(&mut c.errors);
    let value = if errors.is_empty() {
        match (venue, wifi, portal, management, origins, uplink, store_budget) {
            (
                Some(venue),
                Some((_, wifi)),
                Some(portal),
                Some(management),
                Some(origins),
                Some(uplink),
                Some(store_budget),
            ) => Some(Provisioning {
                venue,
                device_name,
                trusted_keys,
                wifi,
                portal,
                management,
                origins,
                uplink,
                store_budget,
            }),
            _ => None,
        }
    } else {
        None
    };
    let mut errors = errors;
    errors.sort_by_key(|d| (d.line, d.column));
    Validation { value, errors, management_listen, staff_token }
}

/// Returns the AP interface name (for the uplink clash check) and the settings.
fn check_wifi<'a>(c: &mut Checker<'a>, t: &Tbl<'a>, profile: &HwProfile) -> Option<(String, WifiSettings)> {
    let hw = &profile.wifi;
    let ssid = c.string(t, "ssid", true).and_then(|(s, span)| {
        if s.is_empty() || s.len() > 32 || !printable(&s) {
            c.err(
                &span,
                "wifi.ssid",
                format!("must be 1..32 bytes without control characters (this one is {} bytes)", s.len()),
            );
            None
        } else {
            Some(s)
        }
    });
    let passphrase = c.string(t, "passphrase", false);
    let pass_ok = match &passphrase {
        None => true,
        Some((p, span)) => {
            let hex64 = p.len() == 64 && p.chars().all(|ch| ch.is_ascii_hexdigit());
            let ok = hex64 || ((8..=63).contains(&p.len()) && p.chars().all(|ch| (' '..='~').contains(&ch)));
            if !ok {
                c.err(
                    span,
                    "wifi.passphrase",
                    format!(
                        "must be 8..63 printable ASCII characters (or 64 hex digits); this one has {}",
                        p.chars().count()
                    ),
                );
            }
            ok
        }
    };
    let security = match c.string(t, "security", false) {
        None => Some(if passphrase.is_some() { Security::Wpa2 } else { Security::Open }),
        Some((s, span)) => match Security::parse(&s) {
            Some(sec) => {
                match (&passphrase, sec) {
                    (Some((_, pspan)), Security::Open) => c.err(
                        pspan,
                        "wifi.passphrase",
                        "an open network has no passphrase: remove it or set security = \"wpa2\"",
                    ),
                    (None, Security::Wpa2 | Security::Wpa3 | Security::Wpa2Wpa3) => {
                        c.err(&span, "wifi.security", format!("{s} needs `passphrase = ...`"))
                    }
                    (Some((p, pspan)), Security::Wpa3 | Security::Wpa2Wpa3) if p.len() == 64 && pass_ok => {
                        c.err(pspan, "wifi.passphrase", "WPA3 (SAE) needs a passphrase, not a 64-hex-digit key")
                    }
                    _ => {}
                }
                if matches!(sec, Security::Wpa3 | Security::Wpa2Wpa3) && !hw.wpa3 {
                    c.err(
                        &span,
                        "wifi.security",
                        format!("board {} has no WPA3 (SAE) support: use wpa2", profile.board),
                    );
                }
                Some(sec)
            }
            None => {
                c.err(&span, "wifi.security", format!("{s:?} is not one of open, wpa2, wpa3, wpa2-wpa3"));
                None
            }
        },
    };
    let country = c.string(t, "country", true).and_then(|(s, span)| {
        if is_country(&s) {
            Some(s)
        } else {
            c.err(
                &span,
                "wifi.country",
                format!("{s:?} is not an ISO 3166-1 alpha-2 country code (e.g. \"DE\", \"US\")"),
            );
            None
        }
    });
    let band_given = match c.string(t, "band", false) {
        None => Some(None),
        Some((s, span)) => match Band::parse(&s) {
            Some(b) => Some(Some((b, span))),
            None => {
                c.err(&span, "wifi.band", format!("{s:?} is not one of \"2.4GHz\", \"5GHz\""));
                None
            }
        },
    };
    let channel = match c.integer(t, "channel") {
        None if t.t.contains_key("channel") => None,
        None => Some((i64::from(DEFAULT_CHANNEL), t.span.clone())),
        Some(x) => Some(x),
    };
    let mut band = None;
    if let Some((ch, span)) = &channel {
        match channel_band(*ch) {
            None => c.err(span, "wifi.channel", format!("{ch} is not a Wi-Fi channel (2.4GHz: 1..13, 5GHz: 36..177)")),
            Some(b) => {
                if let Some(Some((given, _))) = &band_given {
                    if *given != b {
                        c.err(span, "wifi.channel", format!("channel {ch} is not a {} channel", given.name()));
                    }
                }
                if let Some(cc) = &country {
                    if *ch == 14 && cc != "JP" {
                        c.err(span, "wifi.channel", format!("channel 14 is allowed in JP only, not in {cc}"));
                    } else if (*ch == 12 || *ch == 13) && (cc == "US" || cc == "CA") {
                        c.err(span, "wifi.channel", format!("channel {ch} is not allowed in {cc} (use 1..11)"));
                    }
                }
                if !hw.bands.contains(&b) {
                    let bands: Vec<&str> = hw.bands.iter().map(|b| b.name()).collect();
                    c.err(
                        span,
                        "wifi.channel",
                        format!("channel {ch} is {}, but board {} has {}", b.name(), profile.board, bands.join(", ")),
                    );
                }
                band = Some(b);
            }
        }
    }
    let hidden = c.boolean(t, "hidden").unwrap_or(false);
    let max_clients = match c.integer(t, "max_clients") {
        None => Some(hw.max_clients),
        Some((n, span)) => {
            if n < 1 || n > i64::from(hw.max_clients) {
                c.err(
                    &span,
                    "wifi.max_clients",
                    format!("must be 1..{} (the capacity of board {})", hw.max_clients, profile.board),
                );
                None
            } else {
                u16::try_from(n).ok()
            }
        }
    };
    let settings = WifiSettings {
        ssid: ssid?,
        passphrase: if pass_ok { passphrase.map(|p| p.0) } else { None },
        security: security?,
        country: country?,
        channel: u8::try_from(channel?.0).ok()?,
        band: band?,
        hidden,
        max_clients: max_clients?,
    };
    if !pass_ok {
        return None;
    }
    Some((hw.interface.clone(), settings))
}

fn check_portal<'a>(c: &mut Checker<'a>, t: &Tbl<'a>) -> Option<PortalSettings> {
    let address = c.string(t, "address", true).and_then(|(s, span)| match s.parse::<Ipv4Net>() {
        Err(_) => {
            c.err(
                &span,
                "portal.address",
                format!("{s:?} is not an IPv4 address with a prefix, like \"10.42.0.1/24\""),
            );
            None
        }
        Ok(net) => {
            if !(8..=30).contains(&net.prefix_len()) {
                c.err(&span, "portal.address", "the prefix must be /8../30");
                None
            } else if net.addr() == net.network() || net.addr() == net.broadcast() {
                c.err(
                    &span,
                    "portal.address",
                    format!(
                        "{} is the network's {} address: use a host address like {}",
                        net.addr(),
                        if net.addr() == net.network() { "network" } else { "broadcast" },
                        net.hosts().next().unwrap_or(net.addr())
                    ),
                );
                None
            } else if net.addr().is_loopback() || net.addr().is_multicast() || net.addr().is_unspecified() {
                c.err(&span, "portal.address", "must be a unicast LAN address");
                None
            } else {
                Some(net)
            }
        }
    });
    let box_name = c.string(t, "box_name", false).and_then(|(s, span)| {
        let ok = !s.trim_matches('.').is_empty()
            && s.len() <= 253
            && s.split('.')
                .filter(|l| !l.is_empty())
                .all(|l| l.len() <= 63 && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-'));
        if !ok {
            c.err(&span, "portal.box_name", format!("{s:?} is not a DNS name"));
        }
        ok.then_some(s)
    });
    Some(PortalSettings { address: address?, box_name })
}

fn check_origins<'a>(c: &mut Checker<'a>, root: &Tbl<'a>) -> Option<Vec<Origin>> {
    let Some((item, span)) = c.value(root, "origins", false) else { return Some(vec![]) };
    let tables: Vec<(&dyn TableLike, Span)> = match item {
        Item::ArrayOfTables(a) => a.iter().map(|t| (t as &dyn TableLike, t.span())).collect(),
        Item::Value(Value::Array(a)) if a.iter().all(|v| v.as_inline_table().is_some()) => {
            a.iter().filter_map(|v| v.as_inline_table().map(|t| (t as &dyn TableLike, t.span()))).collect()
        }
        other => {
            c.err(&span, "origins", format!("expected [[origins]] tables, found {}", type_name(other)));
            return None;
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, (t, span)) in tables.into_iter().enumerate() {
        let tbl = Tbl { t, span, path: format!("origins[{i}]") };
        c.unknown_keys(&tbl, ORIGIN_KEYS);
        let name = c.string(&tbl, "name", false).map(|s| s.0);
        let address = c.string(&tbl, "address", true).and_then(|(s, span)| match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                c.err(&span, format!("origins[{i}].address"), format!("{s:?} is not an IP:port address"));
                None
            }
        });
        let fingerprint =
            c.string(&tbl, "fingerprint", true).and_then(|(s, span)| match popseed_core::parse_fingerprint(&s) {
                Ok(_) => Some(s),
                Err(e) => {
                    c.err(
                        &span,
                        format!("origins[{i}].fingerprint"),
                        format!("{e} (the certificate sha256 `popseed origin` prints)"),
                    );
                    None
                }
            });
        let server_name = c.string(&tbl, "server_name", false).map(|s| s.0);
        match (address, fingerprint) {
            (Some(address), Some(fingerprint)) => out.push(Origin { name, address, fingerprint, server_name }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// A Linux interface name: 1..15 of letters, digits, `-_.@`.
fn interface_name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 15 && s.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.@".contains(ch))
}

fn check_uplink<'a>(c: &mut Checker<'a>, t: &Tbl<'a>, profile: &HwProfile) -> Option<Uplink> {
    let interface = match c.string(t, "interface", false) {
        Some((s, span)) => {
            if !interface_name_ok(&s) {
                c.err(&span, "uplink.interface", format!("{s:?} is not a network interface name"));
                None
            } else {
                Some(s)
            }
        }
        None => match &profile.uplink {
            Some(u) => Some(u.interface.clone()),
            None => {
                c.err(
                    &t.span,
                    "uplink.interface",
                    format!("missing, and board {} names no uplink interface", profile.board),
                );
                None
            }
        },
    };
    let mode = c.string(t, "mode", false);
    let is_static = match &mode {
        None => Some(false),
        Some((s, _)) if s == "dhcp" => Some(false),
        Some((s, _)) if s == "static" => Some(true),
        Some((s, span)) => {
            c.err(span, "uplink.mode", format!("{s:?} is not one of dhcp, static"));
            None
        }
    };
    let address = c.string(t, "address", false);
    let gateway = c.string(t, "gateway", false);
    let dns = c.strings(t, "dns");
    match is_static? {
        false => {
            for (key, v) in [("address", address.as_ref().map(|a| &a.1)), ("gateway", gateway.as_ref().map(|g| &g.1))] {
                if let Some(span) = v {
                    c.err(span, format!("uplink.{key}"), "only with mode = \"static\"");
                }
            }
            if let Some((_, span, path)) = dns.first() {
                c.err(span, path.clone(), "only with mode = \"static\"");
            }
            Some(Uplink { interface: interface?, mode: UplinkMode::Dhcp })
        }
        true => {
            let address = match address {
                None => {
                    c.err(&t.span, "uplink.address", "missing: mode = \"static\" needs `address = \"IP/PREFIX\"`");
                    None
                }
                Some((s, span)) => match s.parse::<Ipv4Net>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        c.err(&span, "uplink.address", format!("{s:?} is not an IPv4 address with a prefix"));
                        None
                    }
                },
            };
            let gateway = match gateway {
                None => Some(None),
                Some((s, span)) => match s.parse::<Ipv4Addr>() {
                    Ok(g) => Some(Some(g)),
                    Err(_) => {
                        c.err(&span, "uplink.gateway", format!("{s:?} is not an IPv4 address"));
                        None
                    }
                },
            };
            let mut servers = Vec::new();
            let mut dns_ok = true;
            for (s, span, path) in dns {
                match s.parse::<IpAddr>() {
                    Ok(a) => servers.push(a),
                    Err(_) => {
                        c.err(&span, path, format!("{s:?} is not an IP address"));
                        dns_ok = false;
                    }
                }
            }
            let mode = UplinkMode::Static { address: address?, gateway: gateway?, dns: servers };
            (dns_ok).then_some(())?;
            Some(Uplink { interface: interface?, mode })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile::HwProfile;

    pub const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    pub fn good_file(pubkey: &str) -> String {
        format!(
            r#"venue = "Hall B, FooConf 2026"
trusted_keys = ["{pubkey}"]

[wifi]
ssid = "FooConf Downloads"
passphrase = "correct horse battery"
security = "wpa2"
country = "DE"
channel = 6

[portal]
address = "10.42.0.1/24"

[management]
listen = "0.0.0.0:8080"
staff_token = "0123456789abcdef0123"

[[origins]]
name = "fooconf-origin"
address = "203.0.113.10:4433"
fingerprint = "{FP}"

[uplink]
interface = "eth0"
mode = "dhcp"

[store]
budget = "400GiB"
"#
        )
    }

    pub fn pubkey() -> String {
        popseed_release::keys::SecretKey::generate().public().to_text()
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        let v = validate(text, &HwProfile::builtin_generic());
        assert!(v.value.is_none() || v.errors.is_empty());
        v.errors
    }

    /// The line (1-based) of the first occurrence of `needle` in `text`.
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or_else(|| panic!("{needle:?} not in text"))
    }

    #[test]
    fn good_file_validates() {
        let text = good_file(&pubkey());
        let v = validate(&text, &HwProfile::builtin_generic());
        assert_eq!(v.errors, vec![]);
        let p = v.value.unwrap();
        assert_eq!(p.wifi.security, Security::Wpa2);
        assert_eq!(p.wifi.band, Band::Ghz2_4);
        assert_eq!(p.wifi.max_clients, 32);
        assert_eq!(p.portal.address.to_string(), "10.42.0.1/24");
        assert_eq!(p.origins.len(), 1);
        assert_eq!(p.store_budget, Some(400 << 30));
        assert_eq!(p.uplink.unwrap().mode, UplinkMode::Dhcp);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let good = good_file(&pubkey());
        let bad = good
            .replace("passphrase = \"correct horse battery\"", "passphrase = \"abcd\"")
            .replace("country = \"DE\"", "country = \"XX\"\nchanel = 6")
            .replace("address = \"203.0.113.10:4433\"", "address = \"203.0.113.10\"")
            .replace(FP, "00ff")
            .replace("trusted_keys = [\"", "trusted_keys = [\"ed25519:AAAA\", \"");
        let errs = errors(&bad);
        let want = [
            ("trusted_keys[0]", line_of(&bad, "trusted_keys")),
            ("wifi.passphrase", line_of(&bad, "passphrase =")),
            ("wifi.country", line_of(&bad, "country =")),
            ("wifi.chanel", line_of(&bad, "chanel")),
            ("origins[0].address", line_of(&bad, "203.0.113.10")),
            ("origins[0].fingerprint", line_of(&bad, "fingerprint =")),
        ];
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for (key, line) in want {
            let e = errs.iter().find(|e| e.key == key).unwrap_or_else(|| panic!("no error for {key}: {errs:#?}"));
            assert_eq!(e.line, line, "{e:?}");
        }
        let typo = errs.iter().find(|e| e.key == "wifi.chanel").unwrap();
        assert!(typo.message.contains("did you mean `channel`"), "{typo:?}");
        assert_eq!(typo.column, 1);
        let pass = errs.iter().find(|e| e.key == "wifi.passphrase").unwrap();
        assert!(pass.message.contains("8..63") && pass.message.contains("has 4"), "{pass:?}");
        assert_eq!(pass.column, "passphrase = ".len() + 1);
    }

    #[test]
    fn syntax_error_is_one_error_at_its_position() {
        let bad = good_file(&pubkey()).replace("channel = 6", "channel = = 6");
        let errs = errors(&bad);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, line_of(&bad, "channel = = 6"));
        assert!(errs[0].message.contains("syntax"), "{errs:?}");
    }

    #[test]
    fn channel_must_fit_band_country_and_board() {
        let good = good_file(&pubkey());
        let e = errors(&good.replace("channel = 6", "channel = 36\nband = \"2.4GHz\""));
        assert!(e.iter().any(|e| e.key == "wifi.channel" && e.message.contains("not a 2.4GHz channel")), "{e:?}");
        let e = errors(&good.replace("channel = 6", "channel = 15"));
        assert!(e.iter().any(|e| e.key == "wifi.channel" && e.message.contains("not a Wi-Fi channel")), "{e:?}");
        let e = errors(&good.replace("channel = 6", "channel = 13").replace("\"DE\"", "\"US\""));
        assert!(e.iter().any(|e| e.key == "wifi.channel" && e.message.contains("US")), "{e:?}");
        // the built-in profile has 2.4GHz only
        let e = errors(&good.replace("channel = 6", "channel = 36"));
        assert!(e.iter().any(|e| e.key == "wifi.channel" && e.message.contains("but board")), "{e:?}");
        let e = errors(&good.replace("channel = 6", "channel = 40\nband = \"6GHz\""));
        assert!(e.iter().any(|e| e.key == "wifi.band"), "{e:?}");
        let e = errors(&good.replace("channel = 6", "channel = 6\nmax_clients = 500"));
        assert!(e.iter().any(|e| e.key == "wifi.max_clients"), "{e:?}");
    }

    #[test]
    fn security_and_passphrase_must_agree() {
        let good = good_file(&pubkey());
        let e = errors(&good.replace("security = \"wpa2\"", "security = \"open\""));
        assert!(e.iter().any(|e| e.key == "wifi.passphrase" && e.message.contains("open")), "{e:?}");
        let e = errors(&good.replace("passphrase = \"correct horse battery\"\n", "").replace("\"wpa2\"", "\"wpa3\""));
        assert!(e.iter().any(|e| e.key == "wifi.security" && e.message.contains("needs")), "{e:?}");
        let e = errors(&good.replace("\"wpa2\"", "\"wep\""));
        assert!(e.iter().any(|e| e.key == "wifi.security"), "{e:?}");
        // open by default without a passphrase
        let v = validate(
            &good.replace("passphrase = \"correct horse battery\"\nsecurity = \"wpa2\"\n", ""),
            &HwProfile::builtin_generic(),
        );
        assert_eq!(v.value.unwrap().wifi.security, Security::Open);
    }

    #[test]
    fn addresses_keys_tokens_and_missing_sections() {
        let good = good_file(&pubkey());
        let e = errors(&good.replace("10.42.0.1/24", "10.42.0.0/24"));
        assert!(e.iter().any(|e| e.key == "portal.address" && e.message.contains("network")), "{e:?}");
        let e = errors(&good.replace("10.42.0.1/24", "10.42.0.300/24"));
        assert!(e.iter().any(|e| e.key == "portal.address"), "{e:?}");
        let e = errors(&good.replace("0.0.0.0:8080", "localhost"));
        assert!(e.iter().any(|e| e.key == "management.listen"), "{e:?}");
        let e = errors(&good.replace("0123456789abcdef0123", "short"));
        assert!(e.iter().any(|e| e.key == "management.staff_token"), "{e:?}");
        let e = errors(&good.replace("\"400GiB\"", "\"lots\""));
        assert!(e.iter().any(|e| e.key == "store.budget"), "{e:?}");
        let e = errors(&good.replace("mode = \"dhcp\"", "mode = \"static\""));
        assert!(e.iter().any(|e| e.key == "uplink.address" && e.message.contains("missing")), "{e:?}");
        let e = errors(&good.replace("interface = \"eth0\"", "interface = \"wlan0\""));
        assert!(e.iter().any(|e| e.key == "uplink.interface"), "{e:?}");
        let e = errors("venue = \"x\"\n");
        for key in ["wifi", "portal", "management"] {
            assert!(e.iter().any(|d| d.key == key && d.message.contains("missing")), "{key}: {e:?}");
        }
        let e = errors(&good.replace("ssid = \"FooConf Downloads\"", &format!("ssid = \"{}\"", "x".repeat(33))));
        assert!(e.iter().any(|e| e.key == "wifi.ssid"), "{e:?}");
        let e = errors(&good.replace("\"0.0.0.0:8080\"", "8080"));
        assert!(e.iter().any(|e| e.key == "management.listen" && e.message.contains("integer")), "{e:?}");
    }

    #[test]
    fn management_section_is_recovered_from_a_bad_file() {
        let bad = good_file(&pubkey()).replace("\"DE\"", "\"Germany\"").replace("0.0.0.0:8080", "0.0.0.0:9000");
        let v = validate(&bad, &HwProfile::builtin_generic());
        assert!(v.value.is_none());
        assert_eq!(v.management_listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(v.staff_token.as_deref(), Some("0123456789abcdef0123"));
    }

    #[test]
    fn static_uplink() {
        let good = good_file(&pubkey()).replace(
            "mode = \"dhcp\"",
            "mode = \"static\"\naddress = \"192.0.2.10/24\"\ngateway = \"192.0.2.1\"\ndns = [\"192.0.2.1\"]",
        );
        let p = validate(&good, &HwProfile::builtin_generic()).value.unwrap();
        let UplinkMode::Static { address, gateway, dns } = p.uplink.unwrap().mode else { panic!("not static") };
        assert_eq!(
            (address.to_string(), gateway, dns.len()),
            ("192.0.2.10/24".into(), Some(Ipv4Addr::new(192, 0, 2, 1)), 1)
        );
    }

    #[test]
    fn channel_table() {
        assert_eq!(channel_band(1), Some(Band::Ghz2_4));
        assert_eq!(channel_band(36), Some(Band::Ghz5));
        assert_eq!(channel_band(38), None);
        assert_eq!(channel_band(149), Some(Band::Ghz5));
        assert_eq!(channel_band(165), Some(Band::Ghz5));
        assert_eq!(channel_band(0), None);
        assert!(is_country("DE") && is_country("US") && !is_country("XX") && !is_country("de") && !is_country("D E"));
    }
}
