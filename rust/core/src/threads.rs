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

/// The largest thread count accepted by [`set_num_threads`] and `TANGENTFLOW_NUM_THREADS`
/// (far above any useful value; a larger request is a mistake, and building a pool of
/// millions of threads would not return).
pub const MAX_THREADS: usize = 1024;

/// `TANGENTFLOW_NUM_THREADS` parsed: `Ok(None)` when unset or empty, an error naming the
/// variable when it is not an integer from 1 to [`MAX_THREADS`].
pub fn env_num_threads() -> crate::Result<Option<usize>> {
    let Ok(raw) = std::env::var("TANGENTFLOW_NUM_THREADS") else {
        return Ok(None);
    };
    let v = raw.trim();
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(Some(n)),
        _ => Err(crate::Error::InvalidArgument(format!(
            "TANGENTFLOW_NUM_THREADS must be an integer from 1 to {MAX_THREADS}, got {raw:?}"
        ))),
    }
}

/// Threads used when nothing was configured: `TANGENTFLOW_NUM_THREADS` (when valid), else
/// the number of available cores (at most [`MAX_THREADS`]).
#[must_use]
pub fn default_num_threads() -> usize {
    env_num_threads().ok().flatten().unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_THREADS)
    })
}

fn build(n: usize) -> crate::Result<Arc<ThreadPool>> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("tangentflow-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| crate::Error::InvalidArgument(format!("cannot build thread pool: {e}")))
}

/// Sets the number of threads of the library's pool (`0`: back to the default); more than
/// [`MAX_THREADS`] is an error.
pub fn set_num_threads(n: usize) -> crate::Result<()> {
    if n > MAX_THREADS {
        return Err(crate::Error::InvalidArgument(format!(
            "the number of threads must be from 0 (the default) to {MAX_THREADS}, got {n}"
        )));
    }
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

/// Work (in floating-point operations, roughly) below which [`install_sized`] runs on the
/// calling thread: handing a call to the pool and splitting it costs tens of microseconds,
/// more than a second thread saves on a factorization of N ≲ 130 (docs/performance.md,
/// "Small problems").
pub const SEQUENTIAL_WORK: usize = 1 << 24;

/// [`install`] for a call of about `work` operations: below [`SEQUENTIAL_WORK`], `f` runs
/// on the calling thread with `Par::Seq`.
pub fn install_sized<R: Send>(work: usize, f: impl FnOnce(Par) -> R + Send) -> R {
    if work < SEQUENTIAL_WORK {
        return f(Par::Seq);
    }
    install(f)
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
        assert!(set_num_threads(MAX_THREADS + 1).is_err());
        assert!(set_num_threads(usize::MAX).is_err());
        assert_eq!(num_threads(), default_num_threads());
        assert!((1..=MAX_THREADS).contains(&default_num_threads()));
    }
}
