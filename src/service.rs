//! Running under a service manager: tell systemd (`sd_notify`, `Type=notify`) when the node
//! is ready and when it stops, and turn SIGHUP into a reload request that any part of the
//! node can subscribe to, instead of the signal's default of ending the process.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::admin::Readiness;

/// How often readiness is looked at until it is reached (only under systemd).
const READY_POLL: Duration = Duration::from_millis(50);

/// The node's side of the service manager.
pub struct Service {
    reload: watch::Sender<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Catch SIGHUP from now on (it no longer ends the process), and tell systemd
    /// `READY=1` once `ready` is (when `NOTIFY_SOCKET` names a socket; without it nothing
    /// is sent). Must run inside the tokio runtime.
    pub fn start(ready: Readiness) -> std::io::Result<Service> {
        let (reload, _) = watch::channel(0u64);
        let mut hup = signal(SignalKind::hangup())?;
        let tx = reload.clone();
        let mut tasks = vec![tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("reload requested (SIGHUP)");
                tx.send_modify(|n| *n += 1);
            }
        })];
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            tasks.push(tokio::spawn(async move {
                while !ready.is_ready() {
                    tokio::time::sleep(READY_POLL).await;
                }
                notify(&[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status("serving"),
                ]);
            }));
        }
        Ok(Service { reload, tasks })
    }

    /// A receiver that changes at each SIGHUP (the value counts them): what can be re-read
    /// without a restart (tokens, certificates, …) waits on `changed()`.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reload.subscribe()
    }

    /// Tell systemd the node is stopping, and stop listening for signals.
    pub fn stopping(self) {
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping"),
        ]);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Send states to systemd; a failure is logged, never fatal (the unit's timeouts act).
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
