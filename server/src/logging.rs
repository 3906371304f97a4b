//! Log lines: text or JSON, to stderr or a file that SIGUSR1 reopens, each naming its process.
//!
//! Every line says which process wrote it (`master` or `worker N`) and its pid, so the
//! interleaved output of a pool reads clearly. Formatting happens into one buffer per event
//! and is written with a single `write`, so lines from several processes never mix mid-line.
//! Nothing here starts a thread: the master may use it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Which process is logging.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// The supervising master.
    Master,
    /// Worker in slot N.
    Worker(usize),
    /// A one-shot command (migrate, loaddata, …).
    Command,
}

static SINK: OnceLock<Sink> = OnceLock::new();

struct Sink {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
}

/// Install the global subscriber. `filter` uses RUST_LOG syntax; RUST_LOG wins when set.
pub fn init(role: Role, format: LogFormat, filter: &str, file: Option<PathBuf>) -> io::Result<()> {
    let opened = file.as_ref().map(open_append).transpose()?;
    let _ = SINK.set(Sink {
        path: file,
        file: Mutex::new(opened),
    });
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let pid = std::process::id();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(SinkWriter)
        .event_format(Line { role, format, pid })
        .try_init()
        .map_err(io::Error::other)
}

/// Reopen the log file (after logrotate moved it). A no-op when logging to stderr.
pub fn reopen() {
    let Some(sink) = SINK.get() else { return };
    let Some(path) = &sink.path else { return };
    match open_append(path) {
        Ok(f) => *sink.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(f),
        Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot reopen log file"),
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct SinkWriter;

/// One formatted event, written to the sink in a single call.
struct SinkHandle;

impl Write for SinkHandle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(sink) = SINK.get() {
            let mut guard = sink.file.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = guard.as_mut() {
                f.write_all(buf)?;
                return Ok(buf.len());
            }
        }
        io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = SinkHandle;
    fn make_writer(&'a self) -> SinkHandle {
        SinkHandle
    }
}

struct Line {
    role: Role,
    format: LogFormat,
    pid: u32,
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.pairs.push((
                field.name(),
                serde_json::Value::String(format!("{value:?}")),
            ));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.pairs.push((field.name(), value.into()));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pairs.push((field.name(), value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pairs.push((field.name(), value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pairs.push((field.name(), value.into()));
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        match self.format {
            LogFormat::Text => {
                let who = match self.role {
                    Role::Master => "master".to_owned(),
                    Role::Worker(n) => format!("worker {n}"),
                    Role::Command => "wsredis".to_owned(),
                };
                write!(
                    w,
                    "{ts} {:>5} [{who} pid {}] {}: {}",
                    meta.level(),
                    self.pid,
                    meta.target(),
                    fields.message
                )?;
                for (k, v) in &fields.pairs {
                    match v {
                        serde_json::Value::String(s) => write!(w, " {k}={s}")?,
                        other => write!(w, " {k}={other}")?,
                    }
                }
                writeln!(w)
            }
            LogFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("timestamp".into(), ts.into());
                obj.insert("level".into(), meta.level().as_str().into());
                obj.insert("target".into(), meta.target().into());
                let (role, worker) = match self.role {
                    Role::Master => ("master", None),
                    Role::Worker(n) => ("worker", Some(n)),
                    Role::Command => ("command", None),
                };
                obj.insert("process".into(), role.into());
                if let Some(n) = worker {
                    obj.insert("worker".into(), n.into());
                }
                obj.insert("pid".into(), self.pid.into());
                obj.insert("message".into(), fields.message.into());
                for (k, v) in fields.pairs {
                    obj.insert(k.into(), v);
                }
                let mut line = serde_json::Value::Object(obj).to_string();
                line.push('\n');
                w.write_str(&line)
            }
        }
    }
}
