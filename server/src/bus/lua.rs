//! Lua scripts of other modules (presence) run on the bus's command connection, for changes that
//! need several Redis commands to happen atomically. fred stays behind `bus/`: callers hand
//! over the Lua source once and get plain strings back. (The history scripts, which need bytes
//! and the publish options, have their own runner in `scripts.rs`.)
//!
//! Invariants: a script is sent by its SHA1 (`EVALSHA`), learnt from `SCRIPT LOAD` on first use;
//! when Redis does not know it (Redis restarted empty) it is loaded again and the call retried
//! once. Like publishes, calls fail
//! fast with [`BusError::Unavailable`] while the command connection is down.

use std::sync::Mutex;

use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::Value;

use super::{Bus, BusError};

/// A Lua script and, once loaded, its SHA1 as Redis reported it.
#[derive(Debug)]
pub struct Script {
    lua: &'static str,
    sha: Mutex<Option<String>>,
}

impl Script {
    /// Wrap Lua source; it is loaded into Redis on first use.
    pub fn new(lua: &'static str) -> Self {
        Script {
            lua,
            sha: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<String> {
        self.sha.lock().ok().and_then(|s| s.clone())
    }
}

/// One call of a script: its keys and its arguments.
pub type Call = (Vec<String>, Vec<String>);

impl Bus {
    /// Run `script` once and return its reply as strings: an array reply element by element,
    /// a single value as one string, nil as nothing.
    pub async fn eval(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Vec<String>, BusError> {
        if !self.inner.commands.is_connected() {
            return Err(BusError::Unavailable);
        }
        let client = &self.inner.commands;
        let sha = match script.cached() {
            Some(sha) => sha,
            None => self.load(script).await?,
        };
        let value: Value = match client.evalsha(sha, keys.clone(), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                let sha = self.load(script).await?;
                client.evalsha(sha, keys, args).await?
            }
            other => other?,
        };
        Ok(strings(value))
    }

    async fn load(&self, script: &Script) -> Result<String, BusError> {
        let sha: String = self.inner.commands.script_load(script.lua).await?;
        if let Ok(mut cached) = script.sha.lock() {
            *cached = Some(sha.clone());
        }
        Ok(sha)
    }

    /// Run each script call, pipelined on the one command connection (issued in the order
    /// given); one result per call.
    pub async fn eval_all(
        &self,
        calls: Vec<(&Script, Call)>,
    ) -> Vec<Result<Vec<String>, BusError>> {
        let runs = calls
            .into_iter()
            .map(|(script, (keys, args))| self.eval(script, keys, args));
        futures_util::future::join_all(runs).await
    }
}

fn strings(value: Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.into_iter().flat_map(strings).collect(),
        other => other.as_string().into_iter().collect(),
    }
}
