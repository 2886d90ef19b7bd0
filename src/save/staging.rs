//! The staging area of snapshot saves: a copy of a saver's arrays, made in parallel before an
//! asynchronous save returns, so that the caller may change or free its arrays at once.
//!
//! Each saver owns one [`Staging`]. It keeps at most one idle buffer, which the next snapshot
//! reuses when it fits (no new mapping, no page faults), and counts every byte its buffers hold,
//! idle or in use by running jobs ([`Staging::bytes`]): staging memory is bounded by one buffer
//! per running job plus one idle buffer, and is freed with the saver and its jobs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rayon::ThreadPool;

use crate::error::{Error, Result};
use crate::memory::{align_up, AnonMap};

/// Copies of at most this many bytes are one task (large arrays are cut into such pieces).
const COPY_PIECE: usize = 4 << 20;

/// A saver's staging buffers: the idle one and the byte count of all of them.
#[derive(Default)]
pub(crate) struct Staging {
    idle: Mutex<Option<AnonMap>>,
    bytes: AtomicUsize,
}

impl Staging {
    /// Bytes held by this saver's staging buffers now: the idle one and those of running jobs.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A buffer of at least `len` bytes: the idle one if it is large enough (the previous
    /// snapshot's, its pages already present), else a new huge-page-advised mapping.
    fn acquire(self: &Arc<Self>, len: usize) -> Result<Snapshot> {
        let idle = lock(&self.idle).take();
        let map = match idle {
            Some(map) if map.len() >= len => map,
            other => {
                if let Some(small) = other {
                    self.bytes.fetch_sub(small.len(), Ordering::Relaxed);
                    drop(small);
                }
                let map = AnonMap::new(len)
                    .map_err(|e| e.context("cannot allocate the snapshot's staging area"))?;
                self.bytes.fetch_add(map.len(), Ordering::Relaxed);
                map
            }
        };
        Ok(Snapshot {
            map: Some(map),
            spans: Vec::new(),
            owner: Arc::clone(self),
        })
    }
}

/// The mutex's contents even if a panicking thread poisoned it (the buffer slot stays valid).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A copy of a saver's arrays in one staging buffer: array `i` is `bytes(i)`. Dropped, its
/// buffer goes back to the saver's [`Staging`] as the idle one (or is freed if a larger one is
/// idle already).
pub(crate) struct Snapshot {
    map: Option<AnonMap>,
    /// `(offset, len)` of each array in the buffer; offsets are multiples of 64.
    spans: Vec<(usize, usize)>,
    owner: Arc<Staging>,
}

impl Snapshot {
    /// Copies `arrays` into a staging buffer of `staging`, in parallel on `pool`.
    pub(crate) fn take(
        staging: &Arc<Staging>,
        arrays: &[&[u8]],
        pool: &ThreadPool,
    ) -> Result<Self> {
        let mut spans = Vec::with_capacity(arrays.len());
        let mut end = 0usize;
        for a in arrays {
            let at = align_up(end).ok_or_else(|| Error::overflow("snapshot too large"))?;
            end = at
                .checked_add(a.len())
                .filter(|&e| e <= isize::MAX as usize)
                .ok_or_else(|| Error::overflow("snapshot too large"))?;
            spans.push((at, a.len()));
        }
        let mut snap = staging.acquire(end)?;
        snap.spans = spans;
        let buf = snap
            .map
            .as_mut()
            .expect("a new snapshot has its buffer")
            .as_mut_slice();
        // Disjoint destination pieces, each paired with its source piece.
        let mut pieces: Vec<(&mut [u8], &[u8])> = Vec::new();
        let mut rest = &mut buf[..];
        let mut consumed = 0usize;
        for (a, &(at, len)) in arrays.iter().zip(&snap.spans) {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(at - consumed);
            let (dst, tail) = tail.split_at_mut(len);
            rest = tail;
            consumed = at + len;
            pieces.extend(dst.chunks_mut(COPY_PIECE).zip(a.chunks(COPY_PIECE)));
        }
        pool.install(|| {
            pieces
                .into_par_iter()
                .for_each(|(dst, src)| dst.copy_from_slice(src))
        });
        Ok(snap)
    }

    /// Array `i`'s copy.
    pub(crate) fn bytes(&self, i: usize) -> &[u8] {
        let (at, len) = self.spans[i];
        &self
            .map
            .as_ref()
            .expect("a live snapshot has its buffer")
            .as_slice()[at..at + len]
    }

    /// Number of arrays.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        let mut idle = lock(&self.owner.idle);
        let freed = match idle.take() {
            Some(other) if other.len() >= map.len() => {
                *idle = Some(other);
                map
            }
            other => {
                *idle = Some(map);
                match other {
                    Some(o) => o,
                    None => return,
                }
            }
        };
        drop(idle);
        self.owner.bytes.fetch_sub(freed.len(), Ordering::Relaxed);
        drop(freed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_copy_aligned_and_reuse_the_idle_buffer() {
        let staging = Arc::new(Staging::default());
        let pool = crate::pool::get(2).unwrap();
        let a: Vec<u8> = (0..(9 << 20)).map(|i| i as u8).collect();
        let b = vec![7u8; 3];
        let empty: [u8; 0] = [];
        let snap = Snapshot::take(&staging, &[&a, &empty, &b], &pool).unwrap();
        assert_eq!(snap.len(), 3);
        assert!(snap.bytes(0) == &a[..] && snap.bytes(1).is_empty() && snap.bytes(2) == &b[..]);
        assert!(snap.spans.iter().all(|(at, _)| at % 64 == 0));
        let held = staging.bytes();
        assert!(held >= a.len() + 3, "{held}");
        let first = snap.map.as_ref().unwrap().as_ptr();
        drop(snap);
        assert_eq!(staging.bytes(), held, "the buffer stays, idle");
        // The same size again reuses it; a second one at the same time gets its own.
        let again = Snapshot::take(&staging, &[&a, &empty, &b], &pool).unwrap();
        assert_eq!(again.map.as_ref().unwrap().as_ptr(), first);
        let other = Snapshot::take(&staging, &[&b], &pool).unwrap();
        assert!(staging.bytes() > held);
        drop(again);
        drop(other);
        // Only one idle buffer is kept (the larger).
        assert_eq!(staging.bytes(), held);
    }
}
