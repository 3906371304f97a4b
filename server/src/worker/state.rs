//! What one worker shares between its connections: config, counters, the shutdown signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::ControlPipe;
use crate::auth::django::{Django, DjangoError, SessionSource};
use crate::auth::session::SessionStore;
use crate::auth::throttle::{Limits, LoginThrottle};
use crate::bus::{Bus, BusError};
use crate::config::{Config, SessionBackend};
use crate::metrics::{Slot, Slots};
use crate::presence::Presence;
use crate::store::{Store, StoreError};
use crate::supervisor::Control;
use crate::ws::{CloseReason, Namer, Settings, Stats};

/// Decrements a gauge of the worker's slot when dropped, so every exit path is counted.
#[derive(Debug)]
pub struct Gauge(&'static Slot, fn(&Slot) -> &AtomicU64);

impl Gauge {
    /// Increment `which` now and decrement it on drop.
    pub fn enter(app: &App, which: fn(&Slot) -> &AtomicU64) -> Self {
        which(app.slot).fetch_add(1, Ordering::Relaxed);
        Gauge(app.slot, which)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.1)(self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker's shared state.
#[derive(Debug)]
pub struct App {
    /// Slot number given by the master (0 in in-process tests).
    pub id: usize,
    /// The validated configuration.
    pub config: Config,
    /// When this worker started, for uptime.
    pub started: Instant,
    /// This worker's metric slot (shared memory the master reads).
    pub slot: &'static Slot,
    /// Every worker's slot, to compare this worker's load with its siblings'.
    pub slots: Option<&'static Slots>,
    /// HTTP requests answered by this process.
    pub requests: AtomicU64,
    /// Cancelled when the worker drains: every websocket closes with 1001.
    pub shutdown: CancellationToken,
    /// Websocket sessions, which hyper stops tracking once upgraded.
    pub sessions: TaskTracker,
    control: ControlPipe,
    /// Requests after which this worker asks to be recycled (None = never).
    recycle_after: Option<u64>,
    /// This worker's two Redis connections and local fan-out.
    pub bus: Bus,
    /// Redis channel names for this deployment's prefix.
    pub namer: Namer,
    /// Websocket session settings, shared by every session.
    pub ws_settings: Arc<Settings>,
    /// Websocket counters, copied into the metric slot by [`App::export_metrics`].
    pub ws_stats: Arc<Stats>,
    /// The web app's sessions, read to identify sockets.
    pub sessions_store: SessionStore,
    /// Failed-login counters (shared with every worker through Redis).
    pub login_throttle: LoginThrottle,
    /// Users and groups, for pages; connects lazily, so a database that is down at start-up
    /// costs 503 pages, not the worker (websockets do not need it).
    pub store: Store,
    /// With `--session-backend django-*`: sockets are identified from the Django site instead.
    pub django: Option<Django>,
    /// Who is connected: this worker's entries and their refresher.
    pub presence: Presence,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Redis configuration is unusable (Redis being down is not an error: it reconnects).
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The database URL can never work (a bad scheme or syntax).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Django identity source cannot be set up.
    #[error(transparent)]
    Django(#[from] DjangoError),
}

impl App {
    /// Build the state of worker `id`.
    pub async fn start(
        id: usize,
        config: Config,
        control: ControlPipe,
        slots: Option<&'static Slots>,
        slot: &'static Slot,
    ) -> Result<Self, StartError> {
        let recycle_after = (config.max_requests > 0).then(|| {
            let jitter = if config.max_requests_jitter > 0 {
                rand::random_range(0..=config.max_requests_jitter)
            } else {
                0
            };
            config.max_requests + jitter
        });
        let bus = Bus::connect(&config).await?;
        let sessions_store = SessionStore::new(
            bus.commands().clone(),
            config.session_prefix.clone(),
            config.session_ttl,
        );
        let login_throttle = LoginThrottle::new(
            bus.commands().clone(),
            Limits {
                per_user: config.login_max_failures,
                per_address: config.login_max_failures_address,
                window_secs: config.login_window,
            },
        );
        let store = Store::connect_lazy(&config.database_url)?;
        let django = match config.session_backend {
            SessionBackend::Wsredis => None,
            SessionBackend::DjangoRedis => Some(SessionSource::Redis {
                client: bus.commands().clone(),
                prefix: config.django.django_session_redis_prefix.clone(),
            }),
            SessionBackend::DjangoDb => Some(SessionSource::Db),
        }
        .map(|source| Django::new(&config.django, source))
        .transpose()?;
        Ok(App {
            presence: Presence::start(bus.clone(), &config),
            store,
            django,
            namer: Namer::new(&config.redis_prefix),
            ws_settings: Arc::new(Settings::from_config(&config)),
            ws_stats: Arc::new(Stats::default()),
            sessions_store,
            login_throttle,
            bus,
            id,
            config,
            started: Instant::now(),
            slot,
            slots,
            requests: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            control,
            recycle_after,
        })
    }

    /// Whether this worker should let its siblings take the next connection.
    pub fn over_share(&self) -> bool {
        self.slots.is_some_and(|s| s.over_share(self.id))
    }

    /// Whether another worker runs beside this one (and could take a connection).
    pub fn has_siblings(&self) -> bool {
        self.slots.is_some_and(|s| s.live() >= 2)
    }

    /// Count one answered request; asks the master for a replacement at --max-requests.
    pub fn count_request(&self) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if Some(n) == self.recycle_after {
            self.control.send(Control::Recycle);
        }
    }
}

/// The metric-slot counters last copied from the worker's own counters.
#[derive(Debug, Default)]
pub struct Exported {
    values: Vec<u64>,
}

impl App {
    /// Copy what the websocket and bus counters gained since the last call into the metric
    /// slot (adding deltas, so a slot shared by successive workers never goes backwards).
    pub fn export_metrics(&self, last: &mut Exported) {
        let s = &self.ws_stats;
        let b = self.bus.stats();
        let slot = self.slot;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut now = vec![
            load(&s.opened),
            load(&s.received),
            load(&s.delivered),
            load(&s.dropped),
            load(&s.too_large),
            load(&b.lagged),
            load(&s.published),
            load(&b.reconnects),
            load(&s.fanout.count),
            load(&s.fanout.sum_ns),
            load(&s.recovered),
            load(&s.recovery_failed),
            load(&s.gaps_filled),
            load(&s.recover_ignored),
            load(&self.presence.stats().errors),
        ];
        now.extend(s.fanout.buckets.iter().map(load));
        let closes_at = now.len();
        now.extend(CloseReason::ALL.iter().map(|r| s.closed(*r)));
        last.values.resize(now.len(), 0);
        let delta: Vec<u64> = now
            .iter()
            .zip(&last.values)
            .map(|(n, l)| n.saturating_sub(*l))
            .collect();
        let add = |a: &AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&slot.ws_opened, delta[0]);
        add(&slot.client_messages, delta[1]);
        add(&slot.delivered, delta[2]);
        add(&slot.dropped_slow, delta[3]);
        add(&slot.dropped_oversize, delta[4]);
        add(&slot.dropped_lagged, delta[5]);
        add(&slot.published, delta[6]);
        add(&slot.redis_reconnects, delta[7]);
        add(&slot.fanout_latency.count, delta[8]);
        add(&slot.fanout_latency.sum_ns, delta[9]);
        add(&slot.recovered, delta[10]);
        add(&slot.recovery_failed, delta[11]);
        add(&slot.gaps_filled, delta[12]);
        add(&slot.recover_ignored, delta[13]);
        add(&slot.presence_errors, delta[14]);
        for (bucket, d) in slot
            .fanout_latency
            .buckets
            .iter()
            .zip(&delta[15..closes_at])
        {
            add(bucket, *d);
        }
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            add(&slot.ws_close_reasons[i], delta[closes_at + i]);
            for _ in 0..delta[closes_at + i] {
                slot.closed(close_code(*reason));
            }
        }
        slot.redis_up
            .store(u64::from(self.bus.is_up()), Ordering::Relaxed);
        slot.presence_entries.store(
            self.presence.stats().entries.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        last.values = now;
    }
}

/// The close code a session ends with, for each reason (see `ws::close`).
fn close_code(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::Client => 1000,
        CloseReason::GoingAway | CloseReason::PingTimeout => 1001,
        CloseReason::Protocol => 1002,
        CloseReason::InvalidData => 1007,
        CloseReason::TooBig => 1009,
        CloseReason::RedisError => 1011,
        CloseReason::Overloaded | CloseReason::RedisDown => 1013,
        CloseReason::Abnormal => 1006,
    }
}
