//! Shutdown behaviour added to Pingora's: a connection accepted just before shutdown still gets its first request read and answered.
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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;

/// At most this long between the end of accepting and dropping connections without a request.
pub const MAX_LINGER: Duration = Duration::from_millis(500);

/// A [`ServerApp`] that delays the wrapped app's cleanup by `linger`.
pub struct Lingering<A> {
    app: Arc<A>,
    linger: Duration,
}

impl<A> Lingering<A> {
    /// `grace_period` is the server's: the linger never outlasts it, as the runtime is torn down
    /// after it anyway.
    pub fn new(app: A, grace_period: Duration) -> Self {
        Lingering {
            app: Arc::new(app),
            linger: MAX_LINGER.min(grace_period),
        }
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
