//! The module's Prometheus counters: a fixed table of words that nginx's workers share
//! (the module keeps it in a shared memory zone), what each request adds to it, and the
//! text format `fastdfs_metrics;` answers with.
//!
//! Every request the module's content handler takes is counted once, when nginx logs it,
//! with its final status (a 304 from nginx's not_modified filter, a 206 or 416 from its
//! range filter, a proxied storage's answer), how it was served ([`Served`]), whether it
//! asked for ranges ([`RangeKind`]) and the bytes of body sent. Token checks are counted
//! when the module makes them ([`TokenCheck`]).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use fdfs_proto::http::range::range_count;

use crate::{Action, Forward};

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// With a status alone (nginx's page): 400, 404, 405, 416, 500...
    None,
    /// A file of this storage's store paths.
    Local,
    /// A file a C storage packed into a trunk file, from its slot.
    Trunk,
    /// The `token_check_fail` file, for a refused token.
    FailFile,
    /// 302 to another storage of the file's group.
    Redirect,
    /// Fetched from another storage of the file's group by the proxy location.
    Proxy,
}

impl Served {
    pub const ALL: [Served; 6] = [
        Served::None,
        Served::Local,
        Served::Trunk,
        Served::FailFile,
        Served::Redirect,
        Served::Proxy,
    ];

    /// The `served` label.
    pub fn label(self) -> &'static str {
        match self {
            Served::None => "none",
            Served::Local => "local",
            Served::Trunk => "trunk",
            Served::FailFile => "fail_file",
            Served::Redirect => "redirect",
            Served::Proxy => "proxy",
        }
    }

    /// The value of [`Served::label`].
    pub fn from_label(label: &[u8]) -> Option<Served> {
        Served::ALL
            .into_iter()
            .find(|s| s.label().as_bytes() == label)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Action<'_> {
    /// How the request is served when this action succeeds (a file that turns out to be
    /// missing goes on to [`Forward::served`]).
    pub fn served(&self) -> Served {
        match self {
            Action::Local { .. } => Served::Local,
            Action::Slot { .. } => Served::Trunk,
            Action::TokenFailFile { .. } => Served::FailFile,
            Action::Elsewhere => Served::None,
        }
    }
}

impl Forward {
    /// How the request is served; `None` for [`Forward::Wait`] (decided after the wait).
    pub fn served(&self) -> Option<Served> {
        match self {
            Forward::NotFound => Some(Served::None),
            Forward::Wait => None,
            Forward::Redirect { .. } => Some(Served::Redirect),
            Forward::Proxy(_) => Some(Served::Proxy),
        }
    }
}

/// The anti-steal token's verdict (only when `http.anti_steal.check_token` is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Ok,
    /// Older than `token_ttl`.
    Expired,
    /// Malformed, or it does not match.
    Bad,
    /// No `token` or no `ts` argument (400).
    Missing,
    /// Not checked: the request carried the bypass header.
    Bypass,
}

impl TokenCheck {
    pub const ALL: [TokenCheck; 5] = [
        TokenCheck::Ok,
        TokenCheck::Expired,
        TokenCheck::Bad,
        TokenCheck::Missing,
        TokenCheck::Bypass,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TokenCheck::Ok => "ok",
            TokenCheck::Expired => "expired",
            TokenCheck::Bad => "bad",
            TokenCheck::Missing => "missing",
            TokenCheck::Bypass => "bypass",
        }
    }
}

/// What the request's `Range` header asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKind {
    /// No `Range` header (or one that is not `bytes=`, which nginx ignores).
    Whole,
    Single,
    Multi,
}

impl RangeKind {
    pub const ALL: [RangeKind; 3] = [RangeKind::Whole, RangeKind::Single, RangeKind::Multi];

    pub fn of(header: Option<&str>) -> RangeKind {
        match header.map_or(0, range_count) {
            0 => RangeKind::Whole,
            1 => RangeKind::Single,
            _ => RangeKind::Multi,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RangeKind::Whole => "whole",
            RangeKind::Single => "single",
            RangeKind::Multi => "multi",
        }
    }
}

/// The `status` labels: these statuses as they are, the others by class.
pub const STATUS_LABELS: [&str; 20] = [
    "200", "206", "302", "304", "400", "403", "404", "405", "416", "499", "500", "502", "503",
    "504", "1xx", "2xx", "3xx", "4xx", "5xx", "other",
];

/// The slot of `status` among [`STATUS_LABELS`].
pub fn status_slot(status: u32) -> usize {
    let label = status.to_string();
    if let Some(i) = STATUS_LABELS.iter().position(|l| *l == label) {
        return i;
    }
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    STATUS_LABELS
        .iter()
        .position(|l| *l == class)
        .expect("every class has a label")
}

const STATUSES: usize = STATUS_LABELS.len();
const SERVED: usize = Served::ALL.len();

// The table: a header, then the counters.
const MAGIC: usize = 0;
const WORDS_AT: usize = 1;
const REQUESTS: usize = 2;
const BYTES: usize = REQUESTS + STATUSES * SERVED;
const RANGES: usize = BYTES + SERVED;
const TOKENS: usize = RANGES + RangeKind::ALL.len();
const END: usize = TOKENS + TokenCheck::ALL.len();

/// Marks a table laid out as this version of the module lays it out.
const TABLE_MAGIC: u64 = u64::from_be_bytes(*b"fdfsngx1");

/// The shared counters, over a table of [`Counters::WORDS`] words.
#[derive(Clone, Copy)]
pub struct Counters<'a> {
    words: &'a [AtomicU64; END],
}

/// What a request adds when nginx logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub status: u32,
    pub served: Served,
    pub range: RangeKind,
    pub body_bytes: u64,
}

/// The words every version of the table starts with: a magic number naming the layout,
/// and the table's size in words.
pub const HEADER_WORDS: usize = 2;

/// Whether a table starting with `header` holds this layout's counters (a table of
/// [`Counters::WORDS`] words, initialised by [`Counters::attach`]).
pub fn holds_counters(header: &[AtomicU64; HEADER_WORDS]) -> bool {
    header[MAGIC].load(Ordering::Acquire) == TABLE_MAGIC
        && header[WORDS_AT].load(Ordering::Relaxed) == END as u64
}

impl<'a> Counters<'a> {
    /// The size of the table, in words.
    pub const WORDS: usize = END;

    /// The counters in `table`. A table that already holds this layout's counters (a zone
    /// nginx kept across a reload) keeps them; any other content is zeroed first. The
    /// header is written last, so a table is only taken as initialised when complete.
    pub fn attach(table: &'a [AtomicU64; END]) -> Counters<'a> {
        if !holds_counters(Self::header(table)) {
            for w in &table[WORDS_AT..] {
                w.store(0, Ordering::Relaxed);
            }
            table[WORDS_AT].store(END as u64, Ordering::Relaxed);
            table[MAGIC].store(TABLE_MAGIC, Ordering::Release);
        }
        Counters { words: table }
    }

    /// Counters already attached (in a worker, after [`Counters::attach`] ran in the
    /// master); `None` for a table that is not initialised.
    pub fn existing(table: &'a [AtomicU64; END]) -> Option<Counters<'a>> {
        holds_counters(Self::header(table)).then_some(Counters { words: table })
    }

    fn header(table: &[AtomicU64; END]) -> &[AtomicU64; HEADER_WORDS] {
        table[..HEADER_WORDS].try_into().expect("the header fits")
    }

    fn add(&self, at: usize, n: u64) {
        self.words[at].fetch_add(n, Ordering::Relaxed);
    }

    pub fn finished(&self, f: &Finished) {
        let served = f.served.index();
        self.add(REQUESTS + status_slot(f.status) * SERVED + served, 1);
        self.add(BYTES + served, f.body_bytes);
        self.add(RANGES + f.range as usize, 1);
    }

    pub fn token(&self, check: TokenCheck) {
        self.add(TOKENS + check as usize, 1);
    }

    fn get(&self, at: usize) -> u64 {
        self.words[at].load(Ordering::Relaxed)
    }

    /// The counters in Prometheus' text format (version 0.0.4). Requests appear by the
    /// statuses and ways of serving seen so far; the other series always.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "fastdfs_http_requests_total",
            "Requests ngx_fastdfs_module answered, by final HTTP status and how they were \
             served (none: a status alone; local, trunk: a file of this storage; fail_file: \
             the token_check_fail file; redirect: 302 to another storage; proxy: fetched \
             from another storage).",
        );
        for (s, status) in STATUS_LABELS.iter().enumerate() {
            for served in Served::ALL {
                let n = self.get(REQUESTS + s * SERVED + served.index());
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "fastdfs_http_requests_total{{status=\"{status}\",served=\"{}\"}} {n}",
                        served.label()
                    );
                }
            }
        }
        header(
            &mut out,
            "fastdfs_http_body_bytes_total",
            "Bytes of response bodies sent for those requests (headers not included), by \
             how they were served.",
        );
        for served in Served::ALL {
            let n = self.get(BYTES + served.index());
            let _ = writeln!(
                out,
                "fastdfs_http_body_bytes_total{{served=\"{}\"}} {n}",
                served.label()
            );
        }
        header(
            &mut out,
            "fastdfs_http_requests_by_range_total",
            "Those requests by their Range header: whole (none), single (one range), multi \
             (several ranges).",
        );
        for range in RangeKind::ALL {
            let n = self.get(RANGES + range as usize);
            let _ = writeln!(
                out,
                "fastdfs_http_requests_by_range_total{{range=\"{}\"}} {n}",
                range.label()
            );
        }
        header(
            &mut out,
            "fastdfs_http_token_checks_total",
            "Anti-steal token checks by result (ok, expired, bad, missing; bypass: skipped \
             for the bypass header).",
        );
        for check in TokenCheck::ALL {
            let n = self.get(TOKENS + check as usize);
            let _ = writeln!(
                out,
                "fastdfs_http_token_checks_total{{result=\"{}\"}} {n}",
                check.label()
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Box<[AtomicU64; END]> {
        Box::new(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn statuses_by_code_or_class() {
        assert_eq!(STATUS_LABELS[status_slot(200)], "200");
        assert_eq!(STATUS_LABELS[status_slot(416)], "416");
        assert_eq!(STATUS_LABELS[status_slot(499)], "499");
        assert_eq!(STATUS_LABELS[status_slot(201)], "2xx");
        assert_eq!(STATUS_LABELS[status_slot(301)], "3xx");
        assert_eq!(STATUS_LABELS[status_slot(101)], "1xx");
        assert_eq!(STATUS_LABELS[status_slot(444)], "4xx");
        assert_eq!(STATUS_LABELS[status_slot(507)], "5xx");
        assert_eq!(STATUS_LABELS[status_slot(0)], "other");
        assert_eq!(STATUS_LABELS[status_slot(9)], "other");
        assert_eq!(STATUS_LABELS[status_slot(600)], "other");
    }

    #[test]
    fn labels_round_trip() {
        for s in Served::ALL {
            assert_eq!(Served::from_label(s.label().as_bytes()), Some(s));
        }
        assert_eq!(Served::from_label(b"x"), None);
        assert_eq!(RangeKind::of(None), RangeKind::Whole);
        assert_eq!(RangeKind::of(Some("bytes=0-9")), RangeKind::Single);
        assert_eq!(RangeKind::of(Some("bytes=-10")), RangeKind::Single);
        assert_eq!(RangeKind::of(Some("bytes=0-9, 20-29")), RangeKind::Multi);
        assert_eq!(RangeKind::of(Some("items=0-9")), RangeKind::Whole);
    }

    #[test]
    fn counts_and_renders() {
        let t = table();
        let c = Counters::attach(&t);
        let fin = |status, served, range, body_bytes| Finished {
            status,
            served,
            range,
            body_bytes,
        };
        for _ in 0..3 {
            c.finished(&fin(200, Served::Local, RangeKind::Whole, 100));
        }
        c.finished(&fin(206, Served::Local, RangeKind::Single, 10));
        c.finished(&fin(206, Served::Trunk, RangeKind::Multi, 300));
        c.finished(&fin(304, Served::Local, RangeKind::Whole, 0));
        c.finished(&fin(404, Served::None, RangeKind::Whole, 150));
        c.finished(&fin(200, Served::Proxy, RangeKind::Whole, 7));
        c.finished(&fin(507, Served::Proxy, RangeKind::Whole, 0));
        c.finished(&fin(302, Served::Redirect, RangeKind::Whole, 0));
        c.token(TokenCheck::Ok);
        c.token(TokenCheck::Ok);
        c.token(TokenCheck::Expired);
        c.token(TokenCheck::Bad);

        let text = c.render();
        assert_eq!(
            series(&text),
            [
                r#"fastdfs_http_requests_total{status="200",served="local"} 3"#,
                r#"fastdfs_http_requests_total{status="200",served="proxy"} 1"#,
                r#"fastdfs_http_requests_total{status="206",served="local"} 1"#,
                r#"fastdfs_http_requests_total{status="206",served="trunk"} 1"#,
                r#"fastdfs_http_requests_total{status="302",served="redirect"} 1"#,
                r#"fastdfs_http_requests_total{status="304",served="local"} 1"#,
                r#"fastdfs_http_requests_total{status="404",served="none"} 1"#,
                r#"fastdfs_http_requests_total{status="5xx",served="proxy"} 1"#,
                r#"fastdfs_http_body_bytes_total{served="none"} 150"#,
                r#"fastdfs_http_body_bytes_total{served="local"} 310"#,
                r#"fastdfs_http_body_bytes_total{served="trunk"} 300"#,
                r#"fastdfs_http_body_bytes_total{served="fail_file"} 0"#,
                r#"fastdfs_http_body_bytes_total{served="redirect"} 0"#,
                r#"fastdfs_http_body_bytes_total{served="proxy"} 7"#,
                r#"fastdfs_http_requests_by_range_total{range="whole"} 8"#,
                r#"fastdfs_http_requests_by_range_total{range="single"} 1"#,
                r#"fastdfs_http_requests_by_range_total{range="multi"} 1"#,
                r#"fastdfs_http_token_checks_total{result="ok"} 2"#,
                r#"fastdfs_http_token_checks_total{result="expired"} 1"#,
                r#"fastdfs_http_token_checks_total{result="bad"} 1"#,
                r#"fastdfs_http_token_checks_total{result="missing"} 0"#,
                r#"fastdfs_http_token_checks_total{result="bypass"} 0"#,
            ]
        );
        // every family has HELP and TYPE counter lines, before its series
        for name in [
            "fastdfs_http_requests_total",
            "fastdfs_http_body_bytes_total",
            "fastdfs_http_requests_by_range_total",
            "fastdfs_http_token_checks_total",
        ] {
            let help = text.find(&format!("# HELP {name} ")).unwrap();
            let ty = text.find(&format!("# TYPE {name} counter\n")).unwrap();
            let first = text.find(&format!("\n{name}{{")).unwrap();
            assert!(help < ty && ty < first, "{name}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_kept_table_keeps_its_counts() {
        let t = table();
        Counters::attach(&t).token(TokenCheck::Missing);
        // attached again (the zone kept across a reload): the count stays
        let again = Counters::attach(&t);
        assert!(again
            .render()
            .contains("fastdfs_http_token_checks_total{result=\"missing\"} 1\n"));
        assert!(Counters::existing(&t).is_some());
        assert!(holds_counters(t[..2].try_into().unwrap()));
        // anything else is zeroed first
        let t = table();
        t[5].store(99, Ordering::Relaxed);
        assert!(Counters::existing(&t).is_none());
        let c = Counters::attach(&t);
        assert!(series(&c.render()).iter().all(|l| l.ends_with(" 0")));
    }

    #[test]
    fn shared_by_threads() {
        let t = table();
        let c = Counters::attach(&t);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.finished(&Finished {
                            status: 200,
                            served: Served::Local,
                            range: RangeKind::Whole,
                            body_bytes: 2,
                        });
                    }
                });
            }
        });
        let text = c.render();
        assert!(
            text.contains("fastdfs_http_requests_total{status=\"200\",served=\"local\"} 4000\n")
        );
        assert!(text.contains("fastdfs_http_body_bytes_total{served=\"local\"} 8000\n"));
    }
}
