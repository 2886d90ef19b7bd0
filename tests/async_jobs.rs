//! Asynchronous saves through the Rust API (`Saver::save_async`, `save_async_borrowed`,
//! `SaveJob`): the same bytes as the blocking save for every target, snapshot isolation,
//! timeouts, cancel, errors at wait, dropping a running job.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use psv::{Dtype, ErrorKind, JobTarget, SaveOptions, Saver};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("psv-async-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tmp_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".psv-tmp")
        })
        .count()
}

/// A writer that holds its first write until released, then appends to a shared vector.
/// (held, entered, bytes written) and the condition variable that signals changes.
type GateState = (Mutex<(bool, bool, Vec<u8>)>, Condvar);

#[derive(Clone, Default)]
struct Gate(Arc<GateState>);

impl Gate {
    fn held() -> Self {
        let g = Gate::default();
        g.0 .0.lock().unwrap().0 = true;
        g
    }
    fn wait_entered(&self) {
        let (m, cv) = &*self.0;
        let mut s = m.lock().unwrap();
        while !s.1 {
            s = cv.wait(s).unwrap();
        }
    }
    fn release(&self) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().0 = false;
        cv.notify_all();
    }
    fn bytes(&self) -> Vec<u8> {
        self.0 .0.lock().unwrap().2.clone()
    }
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (m, cv) = &*self.0;
        let mut s = m.lock().unwrap();
        s.1 = true;
        cv.notify_all();
        while s.0 {
            s = cv.wait(s).unwrap();
        }
        s.2.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn data() -> Vec<Vec<u8>> {
    [0usize, 5, 70_000, 3 << 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|k| (k * 7 + i) as u8).collect())
        .collect()
}

fn saver(data: &[Vec<u8>]) -> Saver<'_> {
    let mut s = Saver::new();
    for (i, d) in data.iter().enumerate() {
        s.add(&format!("a{i}"), d, Dtype::U8, &[d.len() as u64])
            .unwrap();
    }
    s
}

#[test]
fn every_target_gives_the_blocking_bytes_and_snapshots_are_isolated() {
    let dir = scratch("targets");
    let mut arrays = data();
    let want = saver(&arrays).to_vec(&SaveOptions::default()).unwrap();
    let opts = SaveOptions::default().threads(2);
    let s = saver(&arrays);
    let path = s.save_async(JobTarget::path(dir.join("p")), &opts).unwrap();
    let file = std::fs::File::create(dir.join("f.bin")).unwrap();
    let fd = s.save_async(JobTarget::file(file), &opts).unwrap();
    let gate = Gate::default();
    let stream = s
        .save_async(JobTarget::writer(Box::new(gate.clone())), &opts)
        .unwrap();
    let memory = s.save_async(JobTarget::memory(), &opts).unwrap();
    let buf: &'static mut [u8] = Box::leak(vec![0u8; want.len()].into_boxed_slice());
    let buf_addr = buf.as_ptr() as usize;
    let buffer = s.save_async(JobTarget::buffer(buf), &opts).unwrap();
    // Snapshots: the arrays change as soon as the calls returned.
    drop(s);
    for a in &mut arrays {
        a.fill(0xEE);
    }
    for job in [&path, &fd, &stream, &memory, &buffer] {
        job.wait().unwrap();
        assert!(job.is_done());
        let (done, total) = job.progress();
        assert_eq!(done, total);
    }
    assert!(std::fs::read(dir.join("p.npz")).unwrap() == want);
    assert!(std::fs::read(dir.join("f.bin")).unwrap() == want);
    assert!(gate.bytes() == want);
    assert!(memory.take_bytes().unwrap() == want);
    assert!(memory.take_bytes().is_none());
    drop(buffer);
    // SAFETY: the buffer was leaked (it lives for the rest of the process) and handed to the
    // job, which has ended and dropped its reference: nobody writes it any more.
    let written = unsafe { std::slice::from_raw_parts(buf_addr as *const u8, want.len()) };
    assert!(written == &want[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn borrowed_jobs_time_out_while_held_and_keep_the_saver_shared() {
    let arrays: &'static [Vec<u8>] = Box::leak(data().into_boxed_slice());
    let s = Arc::new(saver(arrays));
    let gate = Gate::held();
    let job = Arc::clone(&s)
        .save_async_borrowed(
            JobTarget::writer(Box::new(gate.clone())),
            &SaveOptions::default(),
        )
        .unwrap();
    gate.wait_entered();
    assert!(!job.is_done());
    assert!(job.try_result().is_none());
    let t0 = Instant::now();
    let e = job
        .wait_timeout(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(t0.elapsed() >= Duration::from_millis(45));
    assert_eq!(Arc::strong_count(&s), 2, "the job holds the saver");
    gate.release();
    job.wait().unwrap();
    // The job let go of the saver before it was seen finished.
    assert_eq!(Arc::strong_count(&s), 1);
    assert!(gate.bytes() == s.to_vec(&SaveOptions::default()).unwrap());
}

#[test]
fn cancel_and_drop_leave_the_old_file_and_no_temporary() {
    let dir = scratch("cancel");
    let old = vec![1u8; 1000];
    let mut s = Saver::new();
    s.add("old", &old, Dtype::U8, &[1000]).unwrap();
    let target = s.save(dir.join("t"), &SaveOptions::default()).unwrap();
    let before = std::fs::read(&target).unwrap();
    let big = vec![3u8; 64 << 20];
    let mut s = Saver::new();
    s.add("big", &big, Dtype::U8, &[big.len() as u64]).unwrap();
    let job = s
        .save_async(JobTarget::path(&target), &SaveOptions::default())
        .unwrap();
    job.cancel();
    let e = job.wait().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Aborted, "{e}");
    assert!(std::fs::read(&target).unwrap() == before);
    assert_eq!(tmp_files(&dir), 0);
    // Dropping a running job cancels it and waits: afterwards there is a whole file.
    let job = s
        .save_async(JobTarget::path(&target), &SaveOptions::default())
        .unwrap();
    drop(job);
    assert_eq!(tmp_files(&dir), 0);
    let after = std::fs::read(&target).unwrap();
    assert!(after == before || after.len() > big.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_come_back_from_wait_and_bad_options_at_once() {
    let dir = scratch("errors");
    std::fs::write(dir.join("file"), b"x").unwrap();
    let arrays = data();
    let s = saver(&arrays);
    let job = s
        .save_async(
            JobTarget::path(dir.join("file").join("sub")),
            &SaveOptions::default(),
        )
        .unwrap();
    let e = job.wait().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(e.os_code(), Some(20), "ENOTDIR"); // Linux's ENOTDIR
    assert_eq!(job.try_result().unwrap().unwrap_err(), e);
    for (target, opts) in [
        (JobTarget::memory(), SaveOptions::default().compression(10)),
        (
            JobTarget::memory(),
            SaveOptions::default().layout(psv::Layout::Dir),
        ),
        (
            JobTarget::path(dir.join("x")),
            SaveOptions::default().threads(5000),
        ),
    ] {
        let err = s.save_async(target, &opts).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArg, "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn staging_is_reused_and_bounded() {
    let arrays = data();
    let s = saver(&arrays);
    assert_eq!(s.staging_bytes(), 0);
    let job = s
        .save_async(JobTarget::memory(), &SaveOptions::default())
        .unwrap();
    job.wait().unwrap();
    let held = s.staging_bytes();
    assert!(held >= arrays.iter().map(Vec::len).sum::<usize>());
    for _ in 0..20 {
        let job = s
            .save_async(JobTarget::memory(), &SaveOptions::default())
            .unwrap();
        job.wait().unwrap();
        assert_eq!(s.staging_bytes(), held);
    }
}
