//! Shutdown behaviour added to Pingora's: connections accepted just before shutdown are answered, draining answers say `Connection: close`, an idle gateway exits at once.
//!
//! When a Pingora service shuts down (SIGTERM, or SIGQUIT at the end of a graceful upgrade), its
//! accept loop stops and, at the same instant, every connection still waiting for a request head
//! is dropped. That includes a connection the old process accepted a moment earlier, whose
//! client has connected but whose request bytes have not arrived yet: the client sees the
//! connection close with no answer, on a fresh connection it cannot safely retry a POST on. So
//! the proxy app is wrapped: once the accept loop has stopped, those connections are given
//! [`Lingering::linger`] to send their request before Pingora's cleanup tells them to go. A
//! request read in that time is served to the end (without keep-alive, the service is shutting
//! down); idle keep-alive connections still close after it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::Session;

use crate::conn;

/// Set once shutdown has started (SIGTERM, or SIGQUIT after the sockets were handed over).
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Shutdown has started: answers end their connection.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Marks the start of shutdown (the readiness service calls it when Pingora broadcasts it).
pub fn start_draining() {
    DRAINING.store(true, Ordering::Relaxed);
}

/// Called before an answer's head is written: while draining, the answer says
/// `Connection: close` and the connection ends after it (Pingora writes the header from the
/// keep-alive state), so no client sends its next request on a connection about to be closed.
pub fn close_if_draining(session: &mut Session) {
    if draining() {
        session.as_downstream_mut().set_keepalive(None);
    }
}

/// The log of the process, with one of Pingora's messages put at its true level: while a new
/// process (`-u`) waits for the old one to hand over its sockets, Pingora logs
/// `No incoming socket transfer` at ERROR every second, although that is the normal course of
/// every upgrade (the new process starts before the old one is told to hand over). That
/// tripped log-based alerts; it is logged at INFO instead. Every other record passes unchanged.
pub struct UpgradeAwareLog<L>(pub L);

const TRANSFER_TARGET: &str = "pingora_core::server::transfer_fd";

impl<L: log::Log> log::Log for UpgradeAwareLog<L> {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if record.level() == log::Level::Error && record.target().starts_with(TRANSFER_TARGET) {
            let text = record.args().to_string();
            if text.starts_with("No incoming socket transfer") {
                let meta = log::Metadata::builder()
                    .level(log::Level::Info)
                    .target(record.target())
                    .build();
                if self.0.enabled(&meta) {
                    self.0.log(
                        &log::Record::builder()
                            .metadata(meta)
                            .args(format_args!(
                                "upgrade: waiting for the running instance to hand over its listening sockets (send it SIGQUIT) ({text})"
                            ))
                            .build(),
                    );
                }
                return;
            }
        }
        self.0.log(record)
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// Connections being served or waiting for their next request head, counted by [`Lingering`].
#[derive(Default)]
pub struct Busy(AtomicUsize);

impl Busy {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

struct BusyGuard<'a>(&'a Busy);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits (on its own thread) for shutdown to start and every connection to be done, then
/// calls `exit`: an idle gateway stops at once instead of sleeping through Pingora's whole
/// grace period. `settle` is how long the count must stay at zero (a connection accepted just
/// before the listener stopped may not be counted yet).
pub fn exit_when_idle(busy: Arc<Busy>, settle: Duration, exit: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("idle-exit".into())
        .spawn(move || {
            const POLL: Duration = Duration::from_millis(20);
            while !draining() {
                std::thread::sleep(POLL);
            }
            let mut idle_since: Option<Instant> = None;
            loop {
                if busy.get() == 0 {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= settle {
                        break;
                    }
                } else {
                    idle_since = None;
                }
                std::thread::sleep(POLL);
            }
            log::info!("shutdown: no connection left, exiting before the grace period ends");
            exit();
        });
    if let Err(e) = spawned {
        log::warn!(
            "cannot start the idle-exit thread ({e}): shutdown waits for the whole grace period"
        );
    }
}

/// At most this long between the end of accepting and dropping connections without a request.
pub const MAX_LINGER: Duration = Duration::from_millis(500);

/// A [`ServerApp`] that delays the wrapped app's cleanup by `linger`, guards each connection
/// ([`conn::Guard`]) and counts the connections it serves ([`Busy`]).
pub struct Lingering<A> {
    app: Arc<A>,
    linger: Duration,
    guard: Option<Arc<conn::Guard>>,
    busy: Arc<Busy>,
}

impl<A> Lingering<A> {
    /// `grace_period` is the server's: the linger never outlasts it, as the runtime is torn down
    /// after it anyway.
    pub fn new(app: A, grace_period: Duration) -> Self {
        Lingering {
            app: Arc::new(app),
            linger: MAX_LINGER.min(grace_period),
            guard: None,
            busy: Arc::default(),
        }
    }

    /// Wraps every connection in `guard`.
    pub fn guarded(mut self, guard: Arc<conn::Guard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The count of connections in service.
    pub fn busy(&self) -> Arc<Busy> {
        self.busy.clone()
    }

    pub fn linger(&self) -> Duration {
        self.linger
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Lingering<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.busy.0.fetch_add(1, Ordering::AcqRel);
        let _busy = BusyGuard(&self.busy);
        let session = match &self.guard {
            Some(g) => g.wrap(session),
            None => session,
        };
        self.app.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.linger).await;
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_never_outlasts_the_grace_period() {
        assert_eq!(
            Lingering::new((), Duration::from_secs(30)).linger(),
            MAX_LINGER
        );
        assert_eq!(
            Lingering::new((), Duration::from_millis(100)).linger(),
            Duration::from_millis(100)
        );
        assert_eq!(Lingering::new((), Duration::ZERO).linger(), Duration::ZERO);
    }
}
