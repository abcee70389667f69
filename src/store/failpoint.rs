//! Test hooks: a named point where the process kills itself (SIGKILL, as `kill -9` would: no
//! destructor, no flush), so tests can check what a crash at that very point leaves on disk.
//! `DISCL_FAILPOINT=<name>` arms one for its first reaching, `<name>#<n>` for its n-th; unarmed,
//! a point costs one comparison. `DISCL_FAIL_ALLOC=<n>` makes every generator call (UNet, VAE
//! encoder or decoder) on more than n images fail as an allocation failure would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Kills the process if `DISCL_FAILPOINT` names this point (and this is the reaching it counts).
pub fn reached(point: &str) {
    static ARMED: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let armed = ARMED.get_or_init(|| {
        let text = std::env::var("DISCL_FAILPOINT").ok()?;
        Some(match text.split_once('#') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (text, 1),
        })
    });
    let Some((name, nth)) = armed else {
        return;
    };
    if name == point && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
        eprintln!("discl: failpoint `{point}` reached: killing this process");
        // SAFETY: kill(2) on our own pid with a valid signal number; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Whether a generator call on `images` images is to fail as if out of memory
/// (`DISCL_FAIL_ALLOC=<n>`: calls on more than n images fail).
pub fn allocation_refused(images: usize) -> bool {
    static LIMIT: OnceLock<Option<usize>> = OnceLock::new();
    let limit = LIMIT.get_or_init(|| std::env::var("DISCL_FAIL_ALLOC").ok()?.parse().ok());
    limit.is_some_and(|limit| images > limit)
}
