//! [`Ticker`]: the root's timer, a thread that posts [`TICK_EVENT`]
//! through the configuration's scheduler (Envoy runs it on the main
//! thread, in the configuration's scheduled hook).

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tollgate_filter::host::HostError;

use crate::abi::EnvoyScheduler;

/// The scheduler event of the root's timer.
pub const TICK_EVENT: u64 = 1;

/// The periodic tick. Dropping it stops and joins the thread before the
/// scheduler is deleted.
pub struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _scheduler: Arc<dyn EnvoyScheduler>,
}

impl Ticker {
    /// Posts [`TICK_EVENT`] through `scheduler` every `period`.
    pub fn start(
        scheduler: Box<dyn EnvoyScheduler>,
        period: Duration,
    ) -> Result<Ticker, HostError> {
        let scheduler: Arc<dyn EnvoyScheduler> = Arc::from(scheduler);
        let (stop, stopped) = mpsc::channel::<()>();
        let posting = scheduler.clone();
        let thread = std::thread::Builder::new()
            .name("tollgate-tick".to_string())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    posting.commit(TICK_EVENT);
                }
            })
            .map_err(|e| HostError(format!("cannot start the tick thread: {e}")))?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
            _scheduler: scheduler,
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
