//! The `wsredis-stress` binary: parse the command line, set up the run (processes, limits,
//! runtime), run the scenario, print and write the report, and exit non-zero when anything
//! was lost.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use wsredis_stress::baseline;
use wsredis_stress::cli::{self, Cli, Command, Common};
use wsredis_stress::env::{Env, cpus};
use wsredis_stress::publish::Mode;
use wsredis_stress::report::{Report, Versus};
use wsredis_stress::scenario::{chat, fanout, idle, recovery, seed, shard};
use wsredis_stress::sweep;

/// Something was lost, reordered, or a socket failed.
const EXIT_LOSS: u8 = 1;
/// The run could not be set up (bad options, a process did not start).
const EXIT_SETUP: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::BaselineServer(b) = &cli.command {
        return match baseline::run(b.bind, b.threads) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wsredis-stress baseline-server: {e}");
                ExitCode::from(EXIT_SETUP)
            }
        };
    }
    if let Command::Shard(a) = &cli.command {
        shard::die_with_parent();
        return match shard_child(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wsredis-stress shard: {e:#}");
                ExitCode::from(EXIT_SETUP)
            }
        };
    }
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_LOSS),
        Err(e) => {
            eprintln!("wsredis-stress: {e:#}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn runtime(c: &Common) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.threads.unwrap_or_else(cpus))
        .enable_all()
        .build()
        .context("building the runtime")
}

/// A child of `idle` or `fanout`: hold its sockets, using the source addresses in the order
/// given.
fn shard_child(a: &cli::Shard) -> anyhow::Result<()> {
    let mut env = Env::wsredis(&a.common, a.count)?;
    if !a.source.is_empty() {
        env.sources = a.source.iter().copied().map(Some).collect();
    }
    runtime(&a.common)?
        .block_on(shard::child(a, &env))
        .context("reporting to the parent")
}

fn run(command: Command) -> anyhow::Result<bool> {
    let (common, report) = match command {
        Command::Seed(a) => {
            let env = Env::wsredis(&a.common, a.subscribers)?;
            let report = runtime(&a.common)?.block_on(seed::run(&a, &env));
            (a.common, report)
        }
        Command::SeedLive(a) => fan("seed-live", a)?,
        Command::Fanout(a) => fan("fanout", a)?,
        Command::Throughput(a) => fan("throughput", a)?,
        Command::Idle(mut a) => {
            let plan = idle::layout(&a);
            a.common.workers = Some(plan.workers);
            let env = Env::wsredis_holding(&a.common, a.sockets, plan.held_here(a.sockets))?;
            let report = runtime(&a.common)?.block_on(idle::run(&a, &plan, &env));
            (a.common, report)
        }
        Command::Chat(a) => {
            let env = Env::wsredis(&a.common, a.users)?;
            let report = runtime(&a.common)?.block_on(chat::run(&a, &env));
            (a.common, report)
        }
        Command::Recovery(a) => {
            let c = recovery::common(&a);
            let env = Env::wsredis(&c, a.subscribers)?;
            let report = runtime(&c)?.block_on(recovery::run(&a, &c, &env));
            (c, report)
        }
        Command::Sweep(a) => {
            let c = &a.fanout.common;
            let sweep = sweep::run(&runtime(c)?, &a.fanout, &a.sizes)?;
            let json = serde_json::to_string_pretty(&sweep)?;
            if c.json {
                println!("{json}");
            } else {
                print!("{}", sweep.table());
            }
            if let Some(dir) = &c.out {
                let name = c.name.clone().unwrap_or_else(|| "sweep".into());
                write(dir, &format!("{name}.json"), &json)?;
                write(dir, &format!("{name}.txt"), &sweep.table())?;
                write(dir, &format!("{name}.svg"), &sweep.svg())?;
            }
            return Ok(sweep.ok());
        }
        Command::BaselineServer(_) | Command::Shard(_) => unreachable!("handled in main"),
    };
    emit(&common, &report)?;
    Ok(report.ok())
}

fn fan(scenario: &str, a: wsredis_stress::cli::Fanout) -> anyhow::Result<(Common, Report)> {
    let plan = fanout::Plan::new(scenario, &a);
    let c = &a.common;
    let rt = runtime(c)?;
    let against_baseline = |rt: &tokio::runtime::Runtime| -> anyhow::Result<Report> {
        let env = Env::baseline(c, plan.subscribers)?;
        Ok(rt.block_on(fanout::run(scenario, c, &plan, &env, Mode::Ws)))
    };
    if a.baseline_only {
        return Ok((a.common.clone(), against_baseline(&rt)?));
    }
    let mut report = {
        let env = fanout::env(c, &plan)?;
        rt.block_on(fanout::run(scenario, c, &plan, &env, c.publisher))
    };
    if a.baseline {
        let base = against_baseline(&rt)?;
        if !base.ok() {
            report
                .errors
                .push(format!("the baseline run failed: {:?}", base.errors));
        }
        report.versus_baseline = Some(Versus {
            baseline_deliveries_per_sec: base.deliveries_per_sec,
            fraction: if base.deliveries_per_sec > 0.0 {
                report.deliveries_per_sec / base.deliveries_per_sec
            } else {
                0.0
            },
            baseline_latency_ms: base.latency_ms,
        });
    }
    Ok((a.common.clone(), report))
}

fn emit(c: &Common, report: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    if c.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    if let Some(dir) = &c.out {
        let name = c.name.clone().unwrap_or_else(|| report.scenario.clone());
        write(dir, &format!("{name}.json"), &json)?;
        write(dir, &format!("{name}.txt"), &report.table())?;
        write(dir, &format!("{name}.svg"), &report.svg())?;
    }
    Ok(())
}

fn write(dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
