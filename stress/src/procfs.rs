//! What the server costs, read from /proc: resident memory (RSS and PSS, from
//! `smaps_rollup`) and CPU time of a process and all its children (the master and workers).

use std::time::Instant;

/// Live children of `pid` (zombies excluded).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((ppid, state)) = stat(p).map(|s| (s.ppid, s.state))
            && ppid == pid
            && state != 'Z'
        {
            out.push(p);
        }
    }
    out
}

struct Stat {
    state: char,
    ppid: i32,
    ticks: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

/// Memory of a process tree, KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    /// Sum of resident set sizes.
    pub rss_kib: u64,
    /// Sum of proportional set sizes (shared pages split between the sharers).
    pub pss_kib: u64,
    /// Processes counted.
    pub processes: usize,
}

/// `pid` and its children.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut v = vec![pid];
    v.extend(children(pid));
    v
}

/// Memory of `pid` and its children.
pub fn memory(pid: i32) -> Memory {
    let mut m = Memory::default();
    for p in tree(pid) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) else {
            continue;
        };
        m.processes += 1;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "Rss:" => m.rss_kib += v,
                "Pss:" => m.pss_kib += v,
                _ => {}
            }
        }
    }
    m
}

/// Open files of `pid` and of each of its children, in [`tree`] order (the master first).
pub fn open_files(pid: i32) -> Vec<usize> {
    tree(pid)
        .into_iter()
        .map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).map_or(0, |d| d.count()))
        .collect()
}

/// Kernel slab memory of the whole machine, KiB (sockets live there).
pub fn slab_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Slab:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A CPU-time reading of a process tree.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    ticks: u64,
    at: Instant,
}

/// CPU used between two marks.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Cpu {
    /// CPU seconds (user + system).
    pub seconds: f64,
    /// Average cores busy over the interval.
    pub cores: f64,
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// Read the CPU time of `pid` and its children (0 for `pid == 0`).
pub fn cpu_mark(pid: i32) -> CpuMark {
    let ticks = if pid == 0 {
        0
    } else {
        tree(pid)
            .into_iter()
            .filter_map(stat)
            .map(|s| s.ticks)
            .sum()
    };
    CpuMark {
        ticks,
        at: Instant::now(),
    }
}

impl CpuMark {
    /// CPU used by the same tree since this mark.
    pub fn since(&self, pid: i32) -> Cpu {
        let now = cpu_mark(pid);
        let seconds = now.ticks.saturating_sub(self.ticks) as f64 / clock_ticks();
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        Cpu {
            seconds,
            cores: seconds / wall,
        }
    }
}
