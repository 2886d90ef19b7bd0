//! Every save destination gives the bytes of the path save: a caller's buffer, a new vector, a
//! seekable file at an offset, a pipe, a writer, and byte ranges of a prepared save rendered in
//! any order; for stored and compressed saves. And the errors: a buffer too small, a closed
//! pipe, a failing writer.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use psv::{restore, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver};

use common::pattern;

fn scratch(name: &str) -> PathBuf {
    common::scratch("dest", name)
}

/// Small arrays (packed), large ones (cut into pieces), an empty one, a 0-d one.
fn arrays() -> Vec<(String, Vec<u8>, Vec<u64>)> {
    let mut v = Vec::new();
    for (i, n) in [100usize, 3 << 20, 0, 70_000, 8, (2 << 20) + 4]
        .into_iter()
        .enumerate()
    {
        let shape = if n == 8 { vec![] } else { vec![n as u64 / 4] };
        let n = if n == 8 { 4 } else { n / 4 * 4 };
        v.push((format!("a{i}"), pattern(n, i as u64 + 1), shape));
    }
    v
}

fn saver(arrays: &[(String, Vec<u8>, Vec<u64>)]) -> Saver<'_> {
    let mut s = Saver::new();
    for (k, d, shape) in arrays {
        s.add(k, d, Dtype::F32, shape).unwrap();
    }
    s
}

#[test]
fn every_destination_gives_the_bytes_of_the_path_save() {
    let dir = scratch("identity");
    let arrays = arrays();
    let s = saver(&arrays);
    for level in [0u32, 1, 6] {
        let opts = SaveOptions::default().compression(level);
        let path = s.save(dir.join(format!("z{level}")), &opts).unwrap();
        let want = std::fs::read(&path).unwrap();
        assert_eq!(
            restore(&path, &RestoreOptions::default()).unwrap().len(),
            arrays.len()
        );

        if level == 0 {
            assert_eq!(s.size(&opts).unwrap(), want.len() as u64);
        } else {
            assert_eq!(s.size(&opts).unwrap_err().kind(), ErrorKind::InvalidArg);
        }
        assert_eq!(s.to_vec(&opts).unwrap(), want, "to_vec, level {level}");

        // A buffer larger than the archive: the archive at its start, the rest untouched.
        let mut buf = vec![0xA5u8; want.len() + 100];
        assert_eq!(s.save_to_buffer(&mut buf, &opts).unwrap(), want.len());
        assert_eq!(&buf[..want.len()], &want[..]);
        assert!(buf[want.len()..].iter().all(|&b| b == 0xA5));

        // A seekable file, from its current offset; the offset ends after the archive.
        let fpath = dir.join(format!("fd{level}.bin"));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&fpath)
            .unwrap();
        f.write_all(b"prefix!").unwrap();
        assert_eq!(s.save_to_file(&f, &opts, None).unwrap(), want.len() as u64);
        assert_eq!(f.stream_position().unwrap(), 7 + want.len() as u64);
        f.write_all(b"tail").unwrap();
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(&all[..7], b"prefix!");
        assert_eq!(&all[7..7 + want.len()], &want[..]);
        assert_eq!(&all[7 + want.len()..], b"tail");

        // A pipe, drained by another thread.
        let (mut rx, tx) = os_pipe();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).unwrap();
            got
        });
        assert_eq!(s.save_to_file(&tx, &opts, None).unwrap(), want.len() as u64);
        drop(tx);
        assert_eq!(reader.join().unwrap(), want, "pipe, level {level}");

        // Any writer.
        let mut out = Vec::new();
        s.save_to_writer(&mut out, &opts, None).unwrap();
        assert_eq!(out, want, "writer, level {level}");

        // Ranges of a prepared save, rendered last part first, from several threads.
        let prepared = s.prepare(&opts).unwrap();
        assert_eq!(prepared.len(), want.len() as u64);
        let part = 1_000_003usize;
        let total = want.len();
        let starts: Vec<usize> = (0..total).step_by(part).rev().collect();
        let parts: Vec<(usize, Vec<u8>)> = std::thread::scope(|sc| {
            let handles: Vec<_> = starts
                .iter()
                .map(|&at| {
                    let prepared = &prepared;
                    sc.spawn(move || {
                        let mut bytes = vec![0u8; part.min(total - at)];
                        prepared.render(at as u64, &mut bytes).unwrap();
                        (at, bytes)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut joined = vec![0u8; want.len()];
        for (at, bytes) in parts {
            joined[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        assert_eq!(joined, want, "rendered parts, level {level}");
        // Every single-byte range near each boundary too.
        for at in [
            0usize,
            29,
            30,
            63,
            64,
            127,
            128,
            want.len() - 23,
            want.len() - 1,
        ] {
            let mut one = [0u8; 1];
            prepared.render(at as u64, &mut one).unwrap();
            assert_eq!(one[0], want[at], "byte {at}, level {level}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn destination_errors_are_clear_and_never_success() {
    let arrays = arrays();
    let s = saver(&arrays);
    let opts = SaveOptions::default();
    let size = s.size(&opts).unwrap() as usize;

    let mut small = vec![0u8; size - 1];
    let e = s.save_to_buffer(&mut small, &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArg);
    assert!(e.message().contains(&size.to_string()), "{}", e.message());

    let prepared = s.prepare(&opts).unwrap();
    let mut past = [0u8; 2];
    let e = prepared.render(size as u64 - 1, &mut past).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArg);

    // A writer that fails after a while: an IO error, never a success.
    struct Failing(usize);
    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 < buf.len() {
                return Err(std::io::Error::from_raw_os_error(libc_epipe()));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = s
        .save_to_writer(&mut Failing(3 << 20), &opts, None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(e.os_code(), Some(libc_epipe()));

    // A pipe whose reader is gone: EPIPE (the test harness ignores SIGPIPE, as Rust programs
    // do by default).
    let (rx, tx) = os_pipe();
    drop(rx);
    let e = s.save_to_file(&tx, &opts, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{}", e.message());

    // Cancel from the progress callback while streaming.
    let mut out = Vec::new();
    let e = s
        .save_to_writer(&mut out, &opts, Some(&mut |_, _| false))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Aborted);

    // The directory layout has no byte stream.
    let dir_opts = SaveOptions::default().layout(psv::Layout::Dir);
    assert_eq!(
        s.prepare(&dir_opts).err().unwrap().kind(),
        ErrorKind::InvalidArg
    );
}

fn libc_epipe() -> i32 {
    32
}

/// A 64-byte-aligned window of `len` bytes inside `raw`.
fn aligned(raw: &mut Vec<u8>, len: usize) -> &mut [u8] {
    raw.resize(len + 64, 0);
    let pad = raw.as_ptr().align_offset(64);
    &mut raw[pad..pad + len]
}

#[test]
fn restore_into_caller_memory_from_a_path_or_an_open_file() {
    let dir = scratch("into");
    let arrays = arrays();
    let s = saver(&arrays);
    let path = s.save(dir.join("m"), &SaveOptions::default()).unwrap();
    let listing = restore(&path, &RestoreOptions::default().metadata_only(true)).unwrap();
    let need = listing.required_bytes();
    assert!(need >= arrays.iter().map(|a| a.1.len()).sum::<usize>());

    let mut raw = Vec::new();
    let buf = aligned(&mut raw, need);
    let a = psv::restore_into(&path, &RestoreOptions::default(), buf).unwrap();
    let base = buf.as_ptr() as usize;
    for (k, data, shape) in &arrays {
        let i = a.find(k).unwrap();
        let info = &a.arrays()[i];
        assert_eq!(&info.shape, shape);
        assert_eq!(info.offset % 64, 0);
        assert_eq!(
            &buf[info.offset..info.offset + info.nbytes],
            &data[..],
            "{k}"
        );
        assert_eq!(a.data_ptr(i).unwrap() as usize, base + info.offset);
        assert!(a.data(i).is_none(), "the bytes are the caller's");
    }
    assert_eq!(a.block_ptr() as usize, base);
    assert_eq!(a.block_len(), need);

    // Too small, misaligned: clear errors.
    let mut raw2 = Vec::new();
    let small = aligned(&mut raw2, need - 1);
    let e = psv::restore_into(&path, &RestoreOptions::default(), small)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArg);
    assert!(e.message().contains(&need.to_string()), "{}", e.message());
    let mut raw3 = Vec::new();
    let wide = aligned(&mut raw3, need + 1);
    let e = psv::restore_into(&path, &RestoreOptions::default(), &mut wide[1..])
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArg);
    assert!(e.message().contains("aligned"), "{}", e.message());

    // Only some keys: a smaller block, the same bytes.
    let one = RestoreOptions::default().keys(["a1"]);
    let need1 = restore(&path, &one.clone().metadata_only(true))
        .unwrap()
        .required_bytes();
    assert!(need1 < need);
    let mut raw4 = Vec::new();
    let buf1 = aligned(&mut raw4, need1);
    let a1 = psv::restore_into(&path, &one, buf1).unwrap();
    let info = &a1.arrays()[0];
    assert_eq!(
        &buf1[info.offset..info.offset + info.nbytes],
        &arrays[1].1[..]
    );

    // An open file: positional reads, its offset does not move.
    let mut f = std::fs::File::open(&path).unwrap();
    f.seek(SeekFrom::Start(5)).unwrap();
    let a = restore(&f, &RestoreOptions::default()).unwrap();
    assert_eq!(f.stream_position().unwrap(), 5);
    for (k, data, _) in &arrays {
        assert_eq!(a.data(a.find(k).unwrap()).unwrap(), &data[..]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn paths_are_opened_as_given_and_fifos_are_refused() {
    let dir = scratch("given");
    let arrays = arrays();
    let s = saver(&arrays);
    let path = s.save(dir.join("w"), &SaveOptions::default()).unwrap();
    // A valid archive under another name restores (np.load opens the path it is given).
    let other = dir.join("weights.bin");
    std::fs::copy(&path, &other).unwrap();
    assert_eq!(
        restore(&other, &RestoreOptions::default()).unwrap().len(),
        arrays.len()
    );
    // Without the suffix, the .npz beside it is found (as before).
    assert_eq!(
        restore(dir.join("w"), &RestoreOptions::default())
            .unwrap()
            .len(),
        arrays.len()
    );
    // A missing file is named as given.
    let e = restore(dir.join("notes.txt"), &RestoreOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(
        e.message().contains("notes.txt") && !e.message().contains("notes.txt.npz"),
        "{}",
        e.message()
    );
    // A FIFO without a writer: an error at once, not a hang.
    let fifo = dir.join("pipe.npz");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let started = std::time::Instant::now();
    let e = restore(&fifo, &RestoreOptions::default()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArg);
    assert!(e.message().contains("FIFO"), "{}", e.message());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A pipe: (read end, write end). (std::io::pipe needs Rust 1.87; the crate's MSRV is 1.85.)
fn os_pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe(2) requires.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: pipe(2) returned two new descriptors that nothing else owns.
    #[allow(unsafe_code)]
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}
