//! Recent errors for the dashboard: a tracing [`Layer`] that keeps the last N WARN and ERROR
//! events (time, level, target, message with its fields) in a ring buffer. The binary installs
//! [`layer`] (writing to the process-wide [`global`] buffer) in its subscriber; the status
//! server reads that buffer.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Events kept by the process-wide buffer.
pub const DEFAULT_CAPACITY: usize = 50;
/// Longest message kept (longer ones are cut).
const MAX_MESSAGE: usize = 400;

/// One WARN or ERROR event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    /// Unix seconds.
    pub at: u64,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The module that logged it, e.g. `popseed_fetch::fill`.
    pub target: String,
    /// The message followed by its fields (`key=value`).
    pub message: String,
    /// How many times in a row this same event was logged (`at` is the latest).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// The ring buffer; newest last.
#[derive(Debug)]
pub struct RecentErrors {
    cap: usize,
    events: Mutex<VecDeque<ErrorEvent>>,
}

impl RecentErrors {
    pub fn new(cap: usize) -> Self {
        RecentErrors { cap: cap.max(1), events: Mutex::new(VecDeque::new()) }
    }

    /// Adds an event; a repeat of the newest one (same level, target and message) only bumps
    /// its count and time, so one noisy retry loop does not push everything else out.
    pub fn push(&self, e: ErrorEvent) {
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = q.back_mut() {
            if last.level == e.level && last.target == e.target && last.message == e.message {
                last.count = last.count.saturating_add(e.count.max(1));
                last.at = e.at;
                return;
            }
        }
        if q.len() == self.cap {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<ErrorEvent> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
    }
}

/// The process-wide buffer that [`layer`] fills.
pub fn global() -> &'static Arc<RecentErrors> {
    static G: OnceLock<Arc<RecentErrors>> = OnceLock::new();
    G.get_or_init(|| Arc::new(RecentErrors::new(DEFAULT_CAPACITY)))
}

/// A layer recording WARN and ERROR events into the [`global`] buffer.
pub fn layer() -> ErrorLayer {
    ErrorLayer::new(global().clone())
}

/// The tracing layer; it sees every event its subscriber enables, keeps WARN and ERROR.
#[derive(Debug, Clone)]
pub struct ErrorLayer {
    buf: Arc<RecentErrors>,
}

impl ErrorLayer {
    pub fn new(buf: Arc<RecentErrors>) -> Self {
        ErrorLayer { buf }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
}

impl<S: Subscriber> Layer<S> for ErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let mut message = f.message;
        message.push_str(&f.rest);
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.buf.push(ErrorEvent {
            at: popseed_core::unix_now(),
            level: level.to_string(),
            target: event.metadata().target().to_owned(),
            message,
            count: 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_last_warnings_and_errors_only() {
        let buf = Arc::new(RecentErrors::new(3));
        let sub = tracing_subscriber::registry().with(ErrorLayer::new(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::info!("not kept");
            tracing::debug!("not kept either");
            for i in 0..4 {
                tracing::warn!(piece = i, "piece failed its hash check");
            }
            tracing::error!(error = %"disk full", "could not store piece");
        });
        let got = buf.recent();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].level, "ERROR");
        assert_eq!(got[0].message, "could not store piece error=disk full");
        assert_eq!(got[1].message, "piece failed its hash check piece=3");
        assert_eq!(got[2].message, "piece failed its hash check piece=2");
        assert!(got[0].target.starts_with("popseed_status"), "{}", got[0].target);
    }

    #[test]
    fn repeats_of_the_newest_event_are_counted_not_stored() {
        let buf = Arc::new(RecentErrors::new(3));
        let sub = tracing_subscriber::registry().with(ErrorLayer::new(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!("disk slow");
            for _ in 0..5 {
                tracing::warn!(origin = "o0", "device link down");
            }
        });
        let got = buf.recent();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].message.as_str(), got[0].count), ("device link down origin=o0", 5));
        assert_eq!((got[1].message.as_str(), got[1].count), ("disk slow", 1));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let buf = Arc::new(RecentErrors::new(2));
        let sub = tracing_subscriber::registry().with(ErrorLayer::new(buf.clone()));
        let long = "é".repeat(500);
        tracing::subscriber::with_default(sub, || tracing::warn!("{long}"));
        let m = &buf.recent()[0].message;
        assert!(m.len() <= MAX_MESSAGE + '…'.len_utf8() && m.ends_with('…'), "{}", m.len());
    }
}
