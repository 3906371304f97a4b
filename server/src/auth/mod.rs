//! Who is asking: Django-compatible password hashes, logging in, sessions in Redis, CSRF
//! tokens, cookies and form bodies.
//!
//! - [`password`]: `pbkdf2_sha256$…` hashes (verify any iteration count, hash new ones).
//! - [`login`]: [`authenticate`] a username and password against the store; [`login()`] also
//!   rotates the session; [`create_user`] for `wsredis createuser`.
//! - [`session`]: the session record in Redis that pages and the websocket pool both read.
//! - [`django`]: identity from an existing Django site's sessions and `auth_user`, for
//!   `--session-backend django-redis|django-db`.
//! - [`throttle`]: failed-login counters in Redis (brute-force throttling).
//! - [`csrf`]: Django-style CSRF tokens and their check; [`cookie`]: `Cookie` parsing and
//!   `Set-Cookie` builders; [`form`]: `application/x-www-form-urlencoded` bodies.
//!
//! The scheme is written up for operators in `docs/sessions.md`.

pub mod cookie;
pub mod csrf;
pub mod django;
pub mod form;
pub mod login;
pub mod password;
pub mod session;
pub mod throttle;

pub use login::{AuthError, authenticate, create_user, login};
pub use session::{SessionError, SessionRecord, SessionStore};
