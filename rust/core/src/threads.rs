//! The library's own rayon pool, sized by `set_num_threads` or `TANGENTFLOW_NUM_THREADS`.
//!
//! Every parallel faer call runs inside [`install`], which hands the closure a `Par`.
//! After `fork()` the child process must not touch the parent's pool (its threads do not
//! exist there), so a `pthread_atfork` child hook switches the library to sequential mode,
//! as tokenizers does.

use faer::Par;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, RwLock};

static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);
static FORKED: AtomicBool = AtomicBool::new(false);
static ATFORK: Once = Once::new();

extern "C" fn child_after_fork() {
    FORKED.store(true, Ordering::SeqCst);
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registering a plain `extern "C"` function that only stores an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(child_after_fork));
        }
    });
}

/// Threads used when nothing was configured: `TANGENTFLOW_NUM_THREADS`, else the number of
/// available cores.
#[must_use]
pub fn default_num_threads() -> usize {
    std::env::var("TANGENTFLOW_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn build(n: usize) -> crate::Result<Arc<ThreadPool>> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("tangentflow-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| crate::Error::InvalidArgument(format!("cannot build thread pool: {e}")))
}

/// Sets the number of threads of the library's pool (`0`: back to the default).
pub fn set_num_threads(n: usize) -> crate::Result<()> {
    register_atfork();
    let n = if n == 0 { default_num_threads() } else { n };
    let pool = build(n)?;
    let old = POOL
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .replace(pool);
    if FORKED.swap(false, Ordering::SeqCst) {
        // In a forked child the parent's pool has no threads: dropping it would wait on
        // workers that do not exist here, so it is leaked instead.
        std::mem::forget(old);
    }
    Ok(())
}

/// The number of threads parallel calls use (1 in a forked child).
#[must_use]
pub fn num_threads() -> usize {
    if FORKED.load(Ordering::SeqCst) {
        return 1;
    }
    pool().map_or(1, |p| p.current_num_threads())
}

fn pool() -> Option<Arc<ThreadPool>> {
    register_atfork();
    if let Some(p) = POOL
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
    {
        return Some(Arc::clone(p));
    }
    let mut guard = POOL
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if guard.is_none() {
        *guard = build(default_num_threads()).ok();
    }
    guard.as_ref().map(Arc::clone)
}

/// Runs `f` inside the library's pool with the matching `Par` (sequential after a fork or
/// with one thread).
pub fn install<R: Send>(f: impl FnOnce(Par) -> R + Send) -> R {
    if FORKED.load(Ordering::SeqCst) {
        return f(Par::Seq);
    }
    match pool() {
        Some(p) if p.current_num_threads() > 1 => p.install(|| f(Par::rayon(0))),
        _ => f(Par::Seq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_follows_setting() {
        set_num_threads(2).unwrap();
        assert_eq!(num_threads(), 2);
        assert!(install(|par| matches!(par, Par::Rayon(_))));
        set_num_threads(1).unwrap();
        assert!(matches!(install(|par| par), Par::Seq));
        set_num_threads(0).unwrap();
        assert_eq!(num_threads(), default_num_threads());
    }
}
