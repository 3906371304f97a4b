//! Metrics: per-worker slots in shared memory, and the master's aggregated exposition.
//!
//! A scrape goes to the master (`--metrics-bind`), never to a random worker. The master sums
//! every slot (so counters stay monotonic across worker restarts), adds its own counters
//! (restarts by cause) and each live worker's memory and CPU from /proc, and renders the text
//! format with the `prometheus` crate's model and encoder. The cost is one pass over a fixed
//! table, however many workers have come and gone.

pub mod slots;

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use slots::{BUCKETS_SECONDS, CLOSE_CODES, ROUTES, STATUS_CLASSES};
pub use slots::{Hist, Slot, Slots};

/// Why the master restarted a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartCause {
    /// It died without being asked to.
    Crash,
    /// Its heartbeat stopped.
    Timeout,
    /// A rolling reload (HUP).
    Reload,
    /// It reached --max-requests.
    Recycle,
}

impl RestartCause {
    const ALL: [RestartCause; 4] = [
        RestartCause::Crash,
        RestartCause::Timeout,
        RestartCause::Reload,
        RestartCause::Recycle,
    ];

    fn label(self) -> &'static str {
        match self {
            RestartCause::Crash => "crash",
            RestartCause::Timeout => "timeout",
            RestartCause::Reload => "reload",
            RestartCause::Recycle => "recycle",
        }
    }
}

/// What only the master knows.
#[derive(Debug, Default)]
pub struct MasterStats {
    restarts: [AtomicU64; 4],
    /// CPU seconds (×1e6) of workers already reaped, so the CPU counter never goes backwards.
    retired_cpu_us: AtomicU64,
}

impl MasterStats {
    /// Count a restart.
    pub fn restarted(&self, cause: RestartCause) {
        let i = RestartCause::ALL
            .iter()
            .position(|c| *c == cause)
            .unwrap_or(0);
        self.restarts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Add the CPU time of a reaped worker.
    pub fn retire_cpu(&self, seconds: f64) {
        self.retired_cpu_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// A live worker, for per-process gauges.
#[derive(Clone, Copy, Debug)]
pub struct LiveWorker {
    /// Its slot number.
    pub slot: usize,
    /// Its pid.
    pub pid: i32,
}

/// Picks one counter out of a slot.
type Field = fn(&Slot) -> &AtomicU64;

fn sum(slots: &Slots, f: impl Fn(&Slot) -> &AtomicU64) -> f64 {
    slots
        .iter()
        .map(|s| f(s).load(Ordering::Relaxed))
        .sum::<u64>() as f64
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(format!("wsredis_{name}"));
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(l: &[(&str, &str)], v: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels(l));
    let mut c = Counter::default();
    c.set_value(v);
    m.set_counter(c);
    m
}

fn gauge(l: &[(&str, &str)], v: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels(l));
    let mut g = Gauge::default();
    g.set_value(v);
    m.set_gauge(g);
    m
}

fn histogram(l: &[(&str, &str)], slots: &Slots, f: impl Fn(&Slot) -> &Hist) -> Metric {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(BUCKETS_SECONDS.len());
    for (i, bound) in BUCKETS_SECONDS.iter().enumerate() {
        cumulative += slots
            .iter()
            .map(|s| f(s).buckets[i].load(Ordering::Relaxed))
            .sum::<u64>();
        let mut b = Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let count: u64 = slots
        .iter()
        .map(|s| f(s).count.load(Ordering::Relaxed))
        .sum();
    let sum_ns: u64 = slots
        .iter()
        .map(|s| f(s).sum_ns.load(Ordering::Relaxed))
        .sum();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(count);
    h.set_sample_sum(sum_ns as f64 / 1e9);
    let mut m = Metric::default();
    m.set_label(labels(l));
    m.set_histogram(h);
    m
}

/// Render the aggregated exposition in the Prometheus text format.
pub fn render(pool: &str, slots: &Slots, master: &MasterStats, live: &[LiveWorker]) -> String {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let pool_l = [("pool", pool)];
    let mut fams = vec![
        family(
            "websockets_open",
            "Open websocket connections.",
            GAUGE,
            vec![gauge(&pool_l, sum(slots, |s| &s.ws_open))],
        ),
        family(
            "http_connections_open",
            "Open HTTP connections.",
            GAUGE,
            vec![gauge(&pool_l, sum(slots, |s| &s.http_open))],
        ),
        family(
            "websockets_opened_total",
            "Websocket connections accepted.",
            COUNTER,
            vec![counter(&pool_l, sum(slots, |s| &s.ws_opened))],
        ),
        family(
            "websockets_refused_total",
            "Websocket handshakes refused before the upgrade.",
            COUNTER,
            vec![counter(&pool_l, sum(slots, |s| &s.ws_refused))],
        ),
    ];
    let mut closed = Vec::new();
    for i in 0..=CLOSE_CODES.len() {
        let code = CLOSE_CODES
            .get(i)
            .map_or("other".to_owned(), u16::to_string);
        closed.push(counter(
            &[("pool", pool), ("code", &code)],
            sum(slots, |s| &s.ws_closed[i]),
        ));
    }
    fams.push(family(
        "websockets_closed_total",
        "Websocket connections closed, by close code.",
        COUNTER,
        closed,
    ));
    let reasons = crate::ws::CloseReason::ALL
        .iter()
        .enumerate()
        .map(|(i, r)| {
            counter(
                &[("pool", pool), ("reason", r.as_str())],
                sum(slots, |s| &s.ws_close_reasons[i]),
            )
        })
        .collect();
    fams.push(family(
        "websockets_close_reasons_total",
        "Websocket connections closed, by why (a ping timeout and a drain both close with 1001).",
        COUNTER,
        reasons,
    ));
    fams.push(family(
        "presence_entries",
        "Presence entries held by the workers (one per socket and channel).",
        GAUGE,
        vec![gauge(&pool_l, sum(slots, |s| &s.presence_entries))],
    ));
    let plain: [(&str, &str, Field); 12] = [
        (
            "client_messages_total",
            "Messages received from websocket clients.",
            |s| &s.client_messages,
        ),
        (
            "published_total",
            "Messages published to Redis (one per channel).",
            |s| &s.published,
        ),
        (
            "publish_errors_total",
            "Publishes that failed because Redis was unavailable.",
            |s| &s.publish_errors,
        ),
        ("delivered_total", "Messages written to websockets.", |s| {
            &s.delivered
        }),
        (
            "redis_reconnects_total",
            "Times a worker's Redis connection came back after a loss.",
            |s| &s.redis_reconnects,
        ),
        (
            "presence_errors_total",
            "Presence writes (join, refresh, leave, sweep) that Redis did not do.",
            |s| &s.presence_errors,
        ),
        (
            "login_failures_total",
            "Failed logins (wrong username or password).",
            |s| &s.login_failures,
        ),
        (
            "login_throttled_total",
            "Logins refused without a password check after too many failures.",
            |s| &s.login_throttled,
        ),
        (
            "ws_recovered_messages_total",
            "Missed messages sent to envelope sockets while recovering their position.",
            |s| &s.recovered,
        ),
        (
            "ws_recovery_failed_total",
            "recovery_failed frames sent: the history could not fill a gap.",
            |s| &s.recovery_failed,
        ),
        (
            "ws_gaps_filled_total",
            "Live gaps (lost pub/sub messages) filled from the history.",
            |s| &s.gaps_filled,
        ),
        (
            "ws_recover_ignored_total",
            "Entries of recover parameters ignored (malformed or unknown channel).",
            |s| &s.recover_ignored,
        ),
    ];
    for (name, help, f) in plain {
        fams.push(family(
            name,
            help,
            COUNTER,
            vec![counter(&pool_l, sum(slots, f))],
        ));
    }
    fams.push(family(
        "dropped_total",
        "Messages or sockets dropped, by reason.",
        COUNTER,
        vec![
            counter(
                &[("reason", "slow_consumer")],
                sum(slots, |s| &s.dropped_slow),
            ),
            counter(
                &[("reason", "oversize")],
                sum(slots, |s| &s.dropped_oversize),
            ),
            counter(
                &[("reason", "redis_lag")],
                sum(slots, |s| &s.dropped_lagged),
            ),
            counter(&[("reason", "overload")], sum(slots, |s| &s.overload)),
        ],
    ));
    fams.push(family(
        "http_bad_requests_total",
        "Connections hyper ended for what the client sent, by reason (431, 400, header timeout).",
        COUNTER,
        vec![
            counter(
                &[("reason", "head_too_large")],
                sum(slots, |s| &s.http_head_too_large),
            ),
            counter(
                &[("reason", "malformed")],
                sum(slots, |s| &s.http_malformed),
            ),
            counter(
                &[("reason", "header_timeout")],
                sum(slots, |s| &s.http_header_timeouts),
            ),
        ],
    ));
    let up_workers = sum(slots, |s| &s.redis_up);
    fams.push(family(
        "redis_up",
        "1 when every live worker is connected to Redis.",
        GAUGE,
        vec![gauge(
            &[],
            f64::from(u8::from(
                !live.is_empty() && up_workers >= live.len() as f64,
            )),
        )],
    ));
    let mut reqs = Vec::new();
    let mut lat = Vec::new();
    for (r, route) in ROUTES.iter().enumerate() {
        for (c, class) in STATUS_CLASSES.iter().enumerate() {
            let v = sum(slots, |s| &s.http_requests[r][c]);
            if v > 0.0 {
                reqs.push(counter(&[("route", route), ("status", class)], v));
            }
        }
        lat.push(histogram(&[("route", route)], slots, |s| {
            &s.http_latency[r]
        }));
    }
    fams.push(family(
        "http_requests_total",
        "HTTP requests answered, by route and status class.",
        COUNTER,
        reqs,
    ));
    fams.push(family(
        "http_request_duration_seconds",
        "Time to answer an HTTP request, by route.",
        HISTOGRAM,
        lat,
    ));
    fams.push(family(
        "fanout_latency_seconds",
        "From a message's arrival from Redis to its write to a websocket.",
        HISTOGRAM,
        vec![histogram(&[], slots, |s| &s.fanout_latency)],
    ));
    fams.push(family(
        "worker_restarts_total",
        "Workers the master replaced, by cause.",
        COUNTER,
        RestartCause::ALL
            .iter()
            .enumerate()
            .map(|(i, c)| {
                counter(
                    &[("cause", c.label())],
                    master.restarts[i].load(Ordering::Relaxed) as f64,
                )
            })
            .collect(),
    ));
    fams.push(family(
        "workers",
        "Live worker processes.",
        GAUGE,
        vec![gauge(&pool_l, live.len() as f64)],
    ));
    let mut mem = Vec::new();
    let mut cpu_live = 0.0;
    for w in live {
        if let Some(p) = proc_stats(w.pid) {
            let slot = w.slot.to_string();
            mem.push(gauge(&[("worker", &slot)], p.rss_bytes));
            cpu_live += p.cpu_seconds;
        }
    }
    fams.push(family(
        "worker_resident_memory_bytes",
        "Resident memory of each live worker.",
        GAUGE,
        mem,
    ));
    let retired = master.retired_cpu_us.load(Ordering::Relaxed) as f64 / 1e6;
    fams.push(family(
        "workers_cpu_seconds_total",
        "CPU time used by all workers, live and gone.",
        COUNTER,
        vec![counter(&pool_l, cpu_live + retired)],
    ));
    // Every series names its pool, so both pools can share one job and one dashboard.
    for m in fams.iter_mut().flat_map(|f| f.mut_metric().iter_mut()) {
        if !m.get_label().iter().any(|l| l.name() == "pool") {
            let mut l = labels(&pool_l);
            l.extend(m.take_label());
            m.set_label(l);
        }
    }
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&fams, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Memory and CPU of one process, from /proc.
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    /// Resident set size in bytes.
    pub rss_bytes: f64,
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
}

/// Read /proc/<pid>/stat (works for zombies too, until they are reaped).
pub fn proc_stats(pid: i32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(0) ppid(1) … utime(11) stime(12) … rss(21).
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as f64;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss: f64 = f.get(21)?.parse().ok()?;
    Some(ProcStats {
        rss_bytes: rss * page,
        cpu_seconds: (utime + stime) / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sums_slots_and_is_valid_text() {
        let slots = Slots::private().unwrap();
        slots.slot(1).delivered.fetch_add(5, Ordering::Relaxed);
        slots.slot(2).delivered.fetch_add(7, Ordering::Relaxed);
        slots.slot(2).closed(1001);
        let timeout = crate::ws::CloseReason::ALL
            .iter()
            .position(|r| *r == crate::ws::CloseReason::PingTimeout)
            .unwrap();
        slots.slot(2).ws_close_reasons[timeout].fetch_add(1, Ordering::Relaxed);
        slots
            .slot(1)
            .http(0, 200, std::time::Duration::from_millis(2));
        let master = MasterStats::default();
        master.restarted(RestartCause::Crash);
        let me = LiveWorker {
            slot: 1,
            pid: std::process::id() as i32,
        };
        let text = render("all", &slots, &master, &[me]);
        assert!(
            text.contains("wsredis_delivered_total{pool=\"all\"} 12"),
            "{text}"
        );
        assert!(text.contains("wsredis_websockets_closed_total{pool=\"all\",code=\"1001\"} 1"));
        assert!(text.contains(
            "wsredis_websockets_close_reasons_total{pool=\"all\",reason=\"ping_timeout\"} 1"
        ));
        assert!(text.contains(
            "wsredis_websockets_close_reasons_total{pool=\"all\",reason=\"going_away\"} 0"
        ));
        assert!(text.contains("wsredis_worker_restarts_total{pool=\"all\",cause=\"crash\"} 1"));
        assert!(text.contains(
            "wsredis_http_requests_total{pool=\"all\",route=\"healthz\",status=\"2xx\"} 1"
        ));
        assert!(text.contains("wsredis_worker_resident_memory_bytes{pool=\"all\",worker=\"1\"}"));
        assert!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .all(|l| l.contains("pool=\"all\"")),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE wsredis_delivered_total").count(), 1);
    }
}
