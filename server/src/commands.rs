//! One-off commands (not `serve`): each builds its own small runtime. They never run in the
//! master, which must stay free of any runtime.

use std::io::Read;

use bytes::Bytes;

use crate::bus::Bus;
use crate::bus::channels::Namer;
use crate::cli::PublishArgs;
use crate::http::api::{self, ApiError, Publish};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The command could not do its work.
    #[error("{0}")]
    Failed(String),
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Failed(format!("cannot start a runtime: {e}")))
}

/// `wsredis publish`: returns the channels and the receiver count for the caller to print.
pub fn publish(args: PublishArgs) -> Result<(Vec<String>, u64), CommandError> {
    let message = if args.message == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CommandError::Usage(format!("cannot read the message: {e}")))?;
        s
    } else {
        args.message
    };
    let history = crate::bus::history::retention_for(&args.history, &args.facility);
    let request = Publish {
        facility: args.facility,
        broadcast: args.broadcast,
        users: args.users,
        groups: args.groups,
        sessions: args.sessions,
        message,
        expire: Some(args.expire),
    };
    let channels = api::channels_of(&Namer::new(&args.redis_prefix), &request)
        .map_err(|e: ApiError| CommandError::Usage(e.to_string()))?;
    runtime()?.block_on(async {
        let bus = Bus::connect_url(&args.redis_url, 1)
            .await
            .map_err(|e| CommandError::Failed(e.to_string()))?;
        let receivers = bus
            .publish_with(
                &channels,
                Bytes::from(request.message),
                args.expire,
                history,
            )
            .await
            .map_err(|e| CommandError::Failed(format!("publish to {}: {e}", args.redis_url)));
        bus.quit().await;
        Ok((channels, receivers?))
    })
}
