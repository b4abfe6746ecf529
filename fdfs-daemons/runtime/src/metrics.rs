//! Prometheus metrics both daemons share: every request counted by command and result,
//! and timed in a histogram; and [`Scrape`], the values read from the daemon's state at
//! each scrape (space, statuses, lag), rendered together in the text format.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fdfs_proto::{cmd, errno};
use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// Request latency buckets, in seconds: from a cached lookup to a large file.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// How a request ended, as the `result` label shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with this status (0: success).
    Status(u8),
    /// The connection ended without an answer (the client went away, or a read failed).
    Closed,
}

impl Outcome {
    /// Allocates only for an errno FastDFS does not name (requests are counted on the
    /// hot path).
    fn label(self) -> Cow<'static, str> {
        match self {
            Outcome::Status(0) => Cow::Borrowed("ok"),
            Outcome::Status(e) => match errno::symbol(e) {
                Some(name) => Cow::Borrowed(name),
                None => Cow::Owned(format!("errno_{e}")),
            },
            Outcome::Closed => Cow::Borrowed("closed"),
        }
    }
}

/// Requests by command and result, and their latency; lives as long as the daemon.
pub struct RequestMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "fastdfs_requests_total",
                "Requests handled, by command and result (ok, an errno name, or closed).",
            ),
            &["command", "result"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "fastdfs_request_duration_seconds",
                "Time from a request's header to its answer, by command.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["command"],
        )
        .expect("valid metric");
        let registry = Registry::new();
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        RequestMetrics {
            registry,
            requests,
            duration,
        }
    }
}

impl RequestMetrics {
    /// Counts and times one request of command `code`.
    pub fn observe(&self, code: u8, outcome: Outcome, elapsed: Duration) {
        let command = cmd::name(code);
        self.requests
            .with_label_values(&[command, outcome.label().as_ref()])
            .inc();
        self.duration
            .with_label_values(&[command])
            .observe(elapsed.as_secs_f64());
    }

    fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// Requests so far per command, and the latency histogram of all of them together
    /// (for the console, which charts their rates and quantiles).
    pub fn summary(&self) -> RequestSummary {
        let mut out = RequestSummary {
            by_command: BTreeMap::new(),
            buckets: LATENCY_BUCKETS.iter().map(|le| (*le, 0)).collect(),
            count: 0,
        };
        for family in self.registry.gather() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                if family.name() == "fastdfs_requests_total" {
                    let command = label("command").unwrap_or_default();
                    *out.by_command.entry(command).or_default() +=
                        m.get_counter().get_value() as u64;
                } else if family.name() == "fastdfs_request_duration_seconds" {
                    let h = m.get_histogram();
                    out.count += h.get_sample_count();
                    for (sum, b) in out.buckets.iter_mut().zip(h.get_bucket()) {
                        sum.1 += b.cumulative_count();
                    }
                }
            }
        }
        out
    }
}

/// See [`RequestMetrics::summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSummary {
    pub by_command: BTreeMap<String, u64>,
    /// Upper bound (seconds) and cumulative count, as Prometheus keeps them.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
}

/// The values of one scrape, read from the daemon's state: added by name with their
/// labels, rendered sorted and grouped as the text format requires.
#[derive(Default)]
pub struct Scrape {
    registry: Registry,
    gauges: HashMap<&'static str, GaugeVec>,
    counters: HashMap<&'static str, CounterVec>,
}

impl Scrape {
    /// Sets gauge `name` for `labels` (all samples of a name share the label names).
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], v: f64) {
        let vec = family(
            &self.registry,
            &mut self.gauges,
            name,
            help,
            labels,
            GaugeVec::new,
        );
        vec.with_label_values(&values(labels)).set(v);
    }

    /// Sets counter `name` (a running total kept elsewhere) for `labels`.
    pub fn counter(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], v: f64) {
        let vec = family(
            &self.registry,
            &mut self.counters,
            name,
            help,
            labels,
            CounterVec::new,
        );
        vec.with_label_values(&values(labels)).inc_by(v.max(0.0));
    }

    /// The text format of these values and of `requests`.
    pub fn render(self, requests: Option<&RequestMetrics>) -> Vec<u8> {
        let mut families = self.registry.gather();
        if let Some(r) = requests {
            families.extend(r.gather());
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding into memory");
        out
    }
}

/// The family `name` of `map`, made and registered on first use.
fn family<'m, V: Collector + Clone + 'static>(
    registry: &Registry,
    map: &'m mut HashMap<&'static str, V>,
    name: &'static str,
    help: &str,
    labels: &[(&str, &str)],
    make: fn(Opts, &[&str]) -> prometheus::Result<V>,
) -> &'m V {
    map.entry(name).or_insert_with(|| {
        let names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        let vec = make(Opts::new(name, help), &names).expect("valid metric");
        registry
            .register(Box::new(vec.clone()))
            .expect("each name once");
        vec
    })
}

fn values<'a>(labels: &[(&str, &'a str)]) -> Vec<&'a str> {
    labels.iter().map(|(_, v)| *v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_scrape_values_render_together() {
        let r = RequestMetrics::default();
        r.observe(
            cmd::UPLOAD_FILE,
            Outcome::Status(0),
            Duration::from_millis(3),
        );
        r.observe(
            cmd::UPLOAD_FILE,
            Outcome::Status(0),
            Duration::from_millis(30),
        );
        r.observe(
            cmd::DOWNLOAD_FILE,
            Outcome::Status(errno::ENOENT),
            Duration::from_micros(50),
        );
        r.observe(cmd::DELETE_FILE, Outcome::Closed, Duration::ZERO);
        let mut s = Scrape::default();
        s.gauge("fastdfs_group_free_mb", "Free", &[("group", "g1")], 12.0);
        s.gauge("fastdfs_group_free_mb", "Free", &[("group", "g2")], 3.0);
        s.counter(
            "fastdfs_storage_upload_success",
            "Uploads",
            &[("group", "g1")],
            7.0,
        );
        let summary = r.summary();
        assert_eq!(summary.count, 4);
        assert_eq!(summary.by_command["upload_file"], 2);
        assert_eq!(summary.by_command["download_file"], 1);
        let le = |bound: f64| summary.buckets.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!((le(0.0001), le(0.005), le(0.05)), (2, 3, 4));
        let text = String::from_utf8(s.render(Some(&r))).unwrap();
        for want in [
            "# TYPE fastdfs_group_free_mb gauge",
            "fastdfs_group_free_mb{group=\"g1\"} 12",
            "fastdfs_group_free_mb{group=\"g2\"} 3",
            "# TYPE fastdfs_storage_upload_success counter",
            "fastdfs_storage_upload_success{group=\"g1\"} 7",
            "fastdfs_requests_total{command=\"upload_file\",result=\"ok\"} 2",
            "fastdfs_requests_total{command=\"download_file\",result=\"ENOENT\"} 1",
            "fastdfs_requests_total{command=\"delete_file\",result=\"closed\"} 1",
            "# TYPE fastdfs_request_duration_seconds histogram",
            "fastdfs_request_duration_seconds_count{command=\"upload_file\"} 2",
            "fastdfs_request_duration_seconds_bucket{command=\"upload_file\",le=\"0.005\"} 1",
            "fastdfs_request_duration_seconds_bucket{command=\"upload_file\",le=\"0.05\"} 2",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
