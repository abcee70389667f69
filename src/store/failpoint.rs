//! Test hooks: a named point where the process kills itself (SIGKILL, as `kill -9` would: no
//! destructor, no flush), so tests can check what a crash at that very point leaves on disk.
//! `DISCL_FAILPOINT=<name>` arms one; unarmed, a point costs one comparison.

use std::sync::OnceLock;

/// Kills the process if `DISCL_FAILPOINT` names this point.
pub fn reached(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("DISCL_FAILPOINT").ok());
    if armed.as_deref() == Some(point) {
        eprintln!("discl: failpoint `{point}` reached: killing this process");
        // SAFETY: kill(2) on our own pid with a valid signal number; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
