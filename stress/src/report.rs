//! What a run reports: the numbers (JSON for machines), a table (for people) and a latency
//! plot (SVG). A run with lost, duplicated or reordered messages, or sockets that failed,
//! is a failure: [`Report::ok`] says so and the binary exits non-zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procfs::{Cpu, Memory};

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// (percentile, ms) points for the plot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<(f64, f64)>,
}

impl Percentiles {
    /// Percentiles of a histogram recorded in microseconds.
    pub fn from_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        let curve = [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
        ]
        .iter()
        .map(|&p| (p, ms(h.value_at_percentile(p))))
        .collect();
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
            curve,
        }
    }
}

/// Connecting the subscribers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connect {
    /// Sockets asked for.
    pub sockets: usize,
    /// Sockets that failed to connect or upgrade.
    pub failed: usize,
    /// Wall time to connect them all, seconds.
    pub seconds: f64,
    /// Connect + upgrade time per socket.
    pub per_socket_ms: Percentiles,
    /// The same times as a histogram (microseconds), so that the reports of several
    /// processes merge exactly.
    #[serde(skip)]
    pub times_us: Option<Histogram<u64>>,
}

/// Memory of the server around the connects (idle scenario).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryReport {
    /// Before the sockets connected.
    pub before: Memory,
    /// With all sockets connected, after the hold.
    pub after: Memory,
    /// (after − before) RSS / sockets, KiB.
    pub rss_per_socket_kib: f64,
    /// (after − before) PSS / sockets, KiB.
    pub pss_per_socket_kib: f64,
    /// Growth of the machine's kernel slab per socket pair (client and server end), KiB.
    pub kernel_slab_per_socket_kib: f64,
    /// Open files of the master and of each worker with every socket held (how evenly the
    /// workers share them, and how far each is from its open-files limit).
    pub open_files: Vec<usize>,
}

/// Sockets dropped and reconnected with `recover=` (recovery scenario).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryReport {
    /// Waves of drops made.
    pub waves: usize,
    /// Sockets dropped (abruptly by the tool, or ended by the server).
    pub dropped: u64,
    /// Reconnects that got their 101.
    pub reconnected: u64,
    /// Reconnect attempts refused or failed (each retried).
    pub reconnect_errors: u64,
    /// `recovered` frames received.
    pub recovered: u64,
    /// Messages those frames said were recovered.
    pub recovered_messages: u64,
    /// `recovery_failed` frames received (must be 0).
    pub recovery_failed: u64,
    /// Numbers received twice by one socket (must be 0).
    pub duplicated: u64,
    /// Numbers received after a higher one (must be 0).
    pub out_of_order: u64,
    /// Dropped sockets still waiting for `recovered` at the end (must be 0).
    pub never_caught_up: u64,
    /// Drop to the reconnect's 101.
    pub reconnect_ms: Percentiles,
    /// Drop to `recovered` (every missed message received).
    pub caught_up_ms: Percentiles,
}

/// The baseline's numbers next to ours.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Versus {
    /// The baseline's deliveries per second.
    pub baseline_deliveries_per_sec: f64,
    /// Ours divided by the baseline's.
    pub fraction: f64,
    /// The baseline's delivery latency.
    pub baseline_latency_ms: Percentiles,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// `wsredis` or `baseline`.
    pub target: String,
    /// The scenario's parameters as given.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Connecting.
    pub connect: Connect,
    /// Seconds until every subscriber was live (warm-up markers seen), after connecting.
    pub warmup_seconds: f64,
    /// Warm-up rounds published meanwhile (each one is a fan-out too).
    pub warmup_rounds: u64,
    /// Messages published.
    pub published: u64,
    /// Deliveries expected (published × receivers per message).
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Expected but never received (must be 0).
    pub lost: u64,
    /// Duplicates or reorderings (must be 0).
    pub disorder: u64,
    /// Sockets the server closed during the run, by close code.
    pub closed: BTreeMap<u16, u64>,
    /// Seconds from the first publish to the last delivery.
    pub seconds: f64,
    /// Deliveries per second over that time.
    pub deliveries_per_sec: f64,
    /// The whole scenario, wall seconds (seed: connecting and receiving included).
    pub total_seconds: f64,
    /// Publish-to-delivery latency of every delivery.
    pub latency_ms: Percentiles,
    /// Publish to the last delivery of each message.
    pub last_delivery_ms: Percentiles,
    /// Server (master and workers) CPU while measuring.
    pub server_cpu: Cpu,
    /// Redis CPU while measuring (when started by the tool).
    pub redis_cpu: Cpu,
    /// This tool's CPU while measuring.
    pub tool_cpu: Cpu,
    /// Server memory at the end.
    pub server_memory: Memory,
    /// Idle memory per socket (idle scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
    /// Drops and recoveries (recovery scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryReport>,
    /// Against the plain TCP baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versus_baseline: Option<Versus>,
    /// Errors met (first few).
    pub errors: Vec<String>,
}

impl Report {
    /// Whether the run lost nothing and every socket worked.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.disorder == 0 && self.connect.failed == 0 && self.errors.is_empty()
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<28} {v}");
        };
        row(
            "scenario",
            format!("{} against {}", self.scenario, self.target),
        );
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        row("parameters", params.join(" "));
        let c = &self.connect;
        row(
            "connect",
            format!(
                "{} sockets in {:.3} s ({} failed); per socket p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                c.sockets,
                c.seconds,
                c.failed,
                c.per_socket_ms.p50,
                c.per_socket_ms.p99,
                c.per_socket_ms.max
            ),
        );
        if self.warmup_rounds > 0 {
            row(
                "warm-up",
                format!(
                    "all live after {:.3} s, {} rounds of markers",
                    self.warmup_seconds, self.warmup_rounds
                ),
            );
        }
        row(
            "messages",
            format!(
                "{} published, {} of {} deliveries received, {} lost, {} out of order",
                self.published, self.delivered, self.expected, self.lost, self.disorder
            ),
        );
        if !self.closed.is_empty() {
            row("closed by the server", format!("{:?}", self.closed));
        }
        row(
            "throughput",
            format!(
                "{:.0} deliveries/s over {:.3} s (scenario {:.3} s)",
                self.deliveries_per_sec, self.seconds, self.total_seconds
            ),
        );
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms ({} samples)",
                p.p50, p.p90, p.p99, p.p999, p.max, p.count
            )
        };
        row("latency, every delivery", p(&self.latency_ms));
        row("latency, last delivery", p(&self.last_delivery_ms));
        row(
            "cpu (cores busy)",
            format!(
                "server {:.2}, redis {:.2}, tool {:.2}",
                self.server_cpu.cores, self.redis_cpu.cores, self.tool_cpu.cores
            ),
        );
        row(
            "server memory",
            format!(
                "RSS {:.1} MiB, PSS {:.1} MiB ({} processes)",
                self.server_memory.rss_kib as f64 / 1024.0,
                self.server_memory.pss_kib as f64 / 1024.0,
                self.server_memory.processes
            ),
        );
        if let Some(m) = &self.memory {
            row(
                "memory per idle socket",
                format!(
                    "RSS {:.2} KiB, PSS {:.2} KiB (server); kernel slab {:.2} KiB per socket pair",
                    m.rss_per_socket_kib, m.pss_per_socket_kib, m.kernel_slab_per_socket_kib
                ),
            );
            if let Some((master, workers)) = m.open_files.split_first() {
                row(
                    "server open files",
                    format!("master {master}, workers {workers:?}"),
                );
            }
        }
        if let Some(r) = &self.recovery {
            row(
                "drops",
                format!(
                    "{} sockets dropped in {} waves, {} reconnected ({} attempts failed)",
                    r.dropped, r.waves, r.reconnected, r.reconnect_errors
                ),
            );
            row(
                "recovery",
                format!(
                    "{} recovered ({} messages), {} recovery_failed, {} duplicated, {} out of order, {} never caught up",
                    r.recovered,
                    r.recovered_messages,
                    r.recovery_failed,
                    r.duplicated,
                    r.out_of_order,
                    r.never_caught_up
                ),
            );
            row(
                "reconnect (drop to 101)",
                format!(
                    "p50 {:.2}  p99 {:.2}  max {:.2} ms",
                    r.reconnect_ms.p50, r.reconnect_ms.p99, r.reconnect_ms.max
                ),
            );
            row(
                "caught up (to recovered)",
                format!(
                    "p50 {:.2}  p99 {:.2}  max {:.2} ms",
                    r.caught_up_ms.p50, r.caught_up_ms.p99, r.caught_up_ms.max
                ),
            );
        }
        if let Some(v) = &self.versus_baseline {
            row(
                "vs plain TCP baseline",
                format!(
                    "{:.0} deliveries/s baseline; ours is {:.0}% of it (baseline latency p50 {:.2}, p99 {:.2} ms)",
                    v.baseline_deliveries_per_sec,
                    v.fraction * 100.0,
                    v.baseline_latency_ms.p50,
                    v.baseline_latency_ms.p99
                ),
            );
        }
        for e in &self.errors {
            row("error", e.clone());
        }
        row(
            "result",
            if self.ok() {
                "ok".into()
            } else {
                "FAILED".into()
            },
        );
        t
    }

    /// The latency plot: latency (ms, log scale) by percentile (log scale of 1/(1−p)).
    pub fn svg(&self) -> String {
        let mut series: Vec<(&str, &str, &Percentiles)> = vec![
            ("every delivery", "#1f77b4", &self.latency_ms),
            (
                "last delivery of each message",
                "#d62728",
                &self.last_delivery_ms,
            ),
        ];
        if let Some(v) = &self.versus_baseline {
            series.push((
                "plain TCP baseline, every delivery",
                "#7f7f7f",
                &v.baseline_latency_ms,
            ));
        }
        // x: log10(1 / (1 − p/100)), 0 (p0) to 5 (p99.999); y: log10(ms), 0.01 ms to 10 s.
        let percentile = |p: f64| -((1.0 - p / 100.0).max(1e-5).log10()) / 5.0;
        let log_ms = |ms: f64| (ms.max(0.01).log10().clamp(-2.0, 4.0) + 2.0) / 6.0;
        let ticks = |v: &[f64]| v.iter().map(|&t| (t, format!("{t}"))).collect();
        let lines: Vec<Line<'_>> = series
            .iter()
            .filter(|(_, _, p)| !p.curve.is_empty())
            .map(|&(name, color, p)| Line {
                name,
                color,
                dashed: false,
                points: p.curve.clone(),
            })
            .collect();
        svg_chart(
            &format!(
                "{} against {}: publish-to-delivery latency",
                self.scenario, self.target
            ),
            &Axis {
                label: "percentile",
                at: &percentile,
                ticks: ticks(&[0.0, 90.0, 99.0, 99.9, 99.99, 99.999]),
            },
            &Axis {
                label: "ms",
                at: &log_ms,
                ticks: ticks(&[0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]),
            },
            &lines,
        )
    }
}

/// One axis of a chart: where a value lands (0 = the axis's start, 1 = its end), the values
/// with a gridline, and the axis's name.
pub struct Axis<'a> {
    /// Printed beside the axis.
    pub label: &'a str,
    /// Value → position along the axis, 0 to 1.
    pub at: &'a dyn Fn(f64) -> f64,
    /// Gridlines: (value, text).
    pub ticks: Vec<(f64, String)>,
}

/// One line of a chart.
pub struct Line<'a> {
    /// Its name in the legend.
    pub name: &'a str,
    /// Its colour (SVG).
    pub color: &'a str,
    /// Drawn dashed (for references such as the baseline).
    pub dashed: bool,
    /// (x, y) points, in the axes' values.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// A line chart as SVG, with gridlines, axis names and a legend.
pub fn svg_chart(title: &str, x: &Axis<'_>, y: &Axis<'_>, lines: &[Line<'_>]) -> String {
    let x_of = |v: f64| LEFT + (x.at)(v).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let y_of = |v: f64| H - BOTTOM - (y.at)(v).clamp(0.0, 1.0) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for (v, label) in &x.ticks {
        let px = x_of(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{px}" y1="{TOP}" x2="{px}" y2="{}" stroke="#ddd"/>"##,
            H - BOTTOM
        );
        let _ = writeln!(
            s,
            r#"<text x="{px}" y="{}" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        W / 2.0,
        H - 18.0,
        escape(x.label)
    );
    for (v, label) in &y.ticks {
        let py = y_of(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{py}" x2="{}" y2="{py}" stroke="#ddd"/>"##,
            W - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            py + 4.0,
            escape(label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>"#,
        H / 2.0,
        H / 2.0,
        escape(y.label)
    );
    for (i, line) in lines.iter().enumerate() {
        let dash = if line.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x_of(px), y_of(py)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            line.color,
            pts.join(" ")
        );
        let ly = TOP + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/>"#,
            LEFT + 10.0,
            LEFT + 30.0,
            line.color
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            LEFT + 36.0,
            ly + 4.0,
            escape(line.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_runs_are_not_ok_and_the_plot_is_svg() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..1000 {
            h.record(v).unwrap();
        }
        let mut r = Report {
            latency_ms: Percentiles::from_us(&h),
            ..Report::default()
        };
        assert!(r.ok());
        assert!(r.table().contains("result                       ok"));
        assert!(r.svg().starts_with("<svg") && r.svg().contains("polyline"));
        r.lost = 1;
        assert!(!r.ok());
    }
}
