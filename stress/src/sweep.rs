//! `sweep`: how the fan-out's cost grows with the number of subscribers. The `fanout`
//! scenario runs at each size, against wsredis and against the plain TCP baseline (same
//! client, same messages, same machine), and the results go into one table, one JSON and one
//! chart of last-delivery latency by subscribers: the slope is the cost of one more
//! subscriber, and the baseline's slope is what the machine itself charges for it.
//!
//! Invariant: a size's runs start their own server (and Redis) and stop them before the next
//! size, so no run inherits another's sockets or stored messages.

use serde::Serialize;

use crate::cli::{Common, Fanout};
use crate::env::Env;
use crate::publish::Mode;
use crate::report::{Axis, Line, Report, svg_chart};
use crate::scenario::fanout::{self, Plan};

/// One size's two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Subscribers.
    pub subscribers: usize,
    /// Against wsredis.
    pub ours: Report,
    /// Against the plain TCP baseline.
    pub baseline: Report,
}

/// Every size of a sweep.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sweep {
    /// The fan-out runs' parameters (besides the size).
    pub messages: Option<u64>,
    /// Messages per second.
    pub rate: f64,
    /// The sizes, in the order run.
    pub points: Vec<Point>,
}

/// Run `fanout` at each of `sizes` against wsredis (publishing with `c.publisher`) and the
/// baseline. A size whose server cannot start ends the sweep with the error.
pub fn run(
    rt: &tokio::runtime::Runtime,
    a: &Fanout,
    sizes: &[usize],
) -> Result<Sweep, crate::launch::LaunchError> {
    let c: &Common = &a.common;
    let mut sweep = Sweep::default();
    for &n in sizes {
        let mut at = a.clone();
        at.subscribers = Some(n);
        let plan = Plan::new("fanout", &at);
        sweep.messages = plan.messages;
        sweep.rate = plan.rate;
        let ours = {
            let env = fanout::env(c, &plan)?;
            rt.block_on(fanout::run("fanout", c, &plan, &env, c.publisher))
        };
        let baseline = {
            let env = Env::baseline(c, n)?;
            rt.block_on(fanout::run("fanout", c, &plan, &env, Mode::Ws))
        };
        if !c.quiet {
            eprintln!(
                "sweep: {n} subscribers: last delivery p99 {:.2} ms (baseline {:.2} ms)",
                ours.last_delivery_ms.p99, baseline.last_delivery_ms.p99
            );
        }
        sweep.points.push(Point {
            subscribers: n,
            ours,
            baseline,
        });
    }
    Ok(sweep)
}

impl Sweep {
    /// Whether every run at every size lost nothing.
    pub fn ok(&self) -> bool {
        !self.points.is_empty() && self.points.iter().all(|p| p.ours.ok() && p.baseline.ok())
    }

    /// The table: per size, last-delivery latency of both, their ratio, and the cost of one
    /// subscriber (median last delivery divided by the subscribers).
    pub fn table(&self) -> String {
        let mut t = format!(
            "  fan-out sweep: {} messages at {} msg/s per size, last delivery of each message (ms)\n",
            self.messages.map_or("?".into(), |m| m.to_string()),
            self.rate
        );
        t.push_str(
            "  subscribers   ours p50    p99   baseline p50    p99   ours/baseline p99   µs/subscriber ours, baseline   lost\n",
        );
        for p in &self.points {
            let (o, b) = (&p.ours.last_delivery_ms, &p.baseline.last_delivery_ms);
            let per = |ms: f64| ms * 1000.0 / p.subscribers.max(1) as f64;
            t.push_str(&format!(
                "  {:>11} {:>10.2} {:>6.2} {:>14.2} {:>6.2} {:>19.2} {:>15.2} {:>14.2} {:>6}\n",
                p.subscribers,
                o.p50,
                o.p99,
                b.p50,
                b.p99,
                if b.p99 > 0.0 { o.p99 / b.p99 } else { 0.0 },
                per(o.p50),
                per(b.p50),
                p.ours.lost + p.baseline.lost,
            ));
        }
        t.push_str(&format!(
            "  result: {}\n",
            if self.ok() { "ok" } else { "FAILED" }
        ));
        t
    }

    /// The chart: last-delivery latency (p50 and p99) by subscribers, ours and the baseline.
    pub fn svg(&self) -> String {
        let max_n = self.points.iter().map(|p| p.subscribers).max().unwrap_or(1) as f64;
        let max_ms = self
            .points
            .iter()
            .flat_map(|p| [p.ours.last_delivery_ms.p99, p.baseline.last_delivery_ms.p99])
            .fold(1.0f64, f64::max);
        let (x_hi, x_step) = nice(max_n);
        let (y_hi, y_step) = nice(max_ms);
        let x_at = |v: f64| v / x_hi;
        let y_at = |v: f64| v / y_hi;
        let ticks = |hi: f64, step: f64| {
            (0..=((hi / step).round() as u32))
                .map(|i| (f64::from(i) * step, format!("{}", f64::from(i) * step)))
                .collect()
        };
        type Pick = fn(&Point) -> f64;
        let picks: [(&str, &str, bool, Pick); 4] = [
            ("wsredis p99", "#d62728", false, |p| {
                p.ours.last_delivery_ms.p99
            }),
            ("wsredis p50", "#1f77b4", false, |p| {
                p.ours.last_delivery_ms.p50
            }),
            ("plain TCP baseline p99", "#d62728", true, |p| {
                p.baseline.last_delivery_ms.p99
            }),
            ("plain TCP baseline p50", "#1f77b4", true, |p| {
                p.baseline.last_delivery_ms.p50
            }),
        ];
        let lines: Vec<Line<'_>> = picks
            .iter()
            .map(|&(name, color, dashed, pick)| Line {
                name,
                color,
                dashed,
                points: self
                    .points
                    .iter()
                    .map(|p| (p.subscribers as f64, pick(p)))
                    .collect(),
            })
            .collect();
        svg_chart(
            "fan-out: publish to last delivery, by subscribers",
            &Axis {
                label: "subscribers",
                at: &x_at,
                ticks: ticks(x_hi, x_step),
            },
            &Axis {
                label: "ms",
                at: &y_at,
                ticks: ticks(y_hi, y_step),
            },
            &lines,
        )
    }
}

/// A round upper bound at or above `v` and a gridline step dividing it (1, 2 or 5 × 10^k,
/// about five gridlines).
fn nice(v: f64) -> (f64, f64) {
    let v = v.max(1e-9);
    let mag = 10f64.powf((v / 5.0).log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| v / s <= 5.0)
        .unwrap_or(10.0 * mag);
    ((v / step).ceil() * step, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_round_and_cover_the_values() {
        assert_eq!(nice(93.7), (100.0, 20.0));
        assert_eq!(nice(10_000.0), (10_000.0, 2_000.0));
        assert_eq!(nice(4.2), (5.0, 1.0));
        let (hi, step) = nice(137.0);
        assert!(hi >= 137.0 && (hi / step).round() <= 5.0);
    }

    #[test]
    fn an_empty_sweep_is_not_ok_and_still_draws() {
        let s = Sweep::default();
        assert!(!s.ok());
        assert!(s.svg().starts_with("<svg"));
        assert!(s.table().contains("FAILED"));
    }
}
