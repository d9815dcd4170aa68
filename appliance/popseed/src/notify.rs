//! systemd's service notifications: `READY=1` once the agent (or the setup page) serves, and
//! `WATCHDOG=1` keep-alives at half the unit's `WatchdogSec=` while the runtime turns, so a hung
//! agent is killed and restarted. Nothing happens outside systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Tells systemd the service is up.
pub fn ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Sends keep-alives until `shutdown` when the unit asks for them (`WatchdogSec=`).
pub fn spawn_watchdog(shutdown: CancellationToken) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    tracing::info!(every = ?every, "systemd watchdog keep-alives");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
                        tracing::warn!(error = %e, "cannot send the watchdog keep-alive");
                    }
                }
            }
        }
    });
}
