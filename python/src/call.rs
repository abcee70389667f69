//! Long engine calls from Python: each runs on a thread of its own while the calling thread
//! waits with the GIL released, waking every few milliseconds to let Python handle signals.
//!
//! Ctrl-C (SIGINT, or any signal whose Python handler raises) during a call raises the call's
//! stop flag (a `train` node's trainer stops between epochs) and lets the version in hand
//! finish and commit, then the call raises the handler's exception (`KeyboardInterrupt`), so
//! the output folder is left at a committed version. A second Ctrl-C abandons the call at once:
//! it goes on in the background, and the object it ran on stays busy until it is done (the
//! store survives even a kill, as with `discl run`).

use crate::errors::run_error;
use crossbeam_channel::RecvTimeoutError;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a waiting call looks at Python's signals.
const POLL: Duration = Duration::from_millis(50);

/// Runs `work` on its own thread and waits for it (see the module header). `stop` is raised on
/// the first interrupt.
pub fn interruptible<T, F>(py: Python<'_>, stop: &Arc<AtomicBool>, work: F) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("discl-call".into())
        .spawn(move || {
            // A panic drops `sender`, which the waiting side reports.
            let _ = sender.send(work());
        })
        .map_err(|e| run_error(py, format!("cannot start a thread: {e}")))?;
    let mut interrupted: Option<PyErr> = None;
    loop {
        match py.detach(|| receiver.recv_timeout(POLL)) {
            Ok(value) => return interrupted.map_or(Ok(value), Err),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(run_error(
                    py,
                    "the engine failed inside this call (see the message above)".into(),
                ))
            }
        }
        if let Err(error) = py.check_signals() {
            if interrupted.is_some() {
                eprintln!("discl: abandoned; the call goes on in the background until its version is done");
                return Err(error);
            }
            stop.store(true, Ordering::SeqCst);
            eprintln!("discl: stopping after the version in hand (Ctrl-C again to abandon it)");
            interrupted = Some(error);
        }
    }
}
