//! A plain timed benchmark of psv through the C ABI (no Python), against this machine's limits
//! measured in the same run: page-cache write (1 thread `write`, plain and after `fallocate`;
//! 2 threads `pwrite`), page-cache
//! read into a fresh huge-page buffer (2 threads `pread`), and memcpy; then the per-array cost
//! of saving and restoring many small arrays (the W3 shape: 20000 x 1 KiB, int32/float32).
//!
//! `cargo run --release --example bench -- [SIZE_MIB] [DIR]` (defaults: 1024, target/bench).
//! Before each timed run: the previous output is deleted, `sync` runs, and as much memory as the
//! run uses is allocated, touched and freed on every CPU (these VMs return freed memory to the
//! host, and the next first touch would otherwise measure the hypervisor; freed pages wait in
//! the freeing CPU's own free list, so touching on one CPU only favours writers on that CPU).

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::time::Instant;

use psv::ffi::types::*;
use psv::ffi::*;

const RUNS: usize = 5;

fn prepare(bytes: usize, remove: &[&Path]) {
    for p in remove {
        let _ = std::fs::remove_file(p);
    }
    // SAFETY: sync(2) has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::sync()
    };
    if bytes == 0 {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|s| {
        for cpu in 0..cpus {
            s.spawn(move || {
                pin_to(cpu);
                let mut m = huge_buffer(bytes);
                for i in (0..bytes).step_by(4096) {
                    m[i] = 1;
                }
            });
        }
    });
}

/// Pins the calling thread to one CPU (best effort).
fn pin_to(cpu: usize) {
    // SAFETY: the set is a zeroed, then filled, local; sched_setaffinity(0, ..) reads it and
    // applies to this thread only.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Reserves `len` bytes for `f` (fallocate), as psv's save does.
fn reserve(f: &File, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is open for the call; fallocate reads no memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
}

fn median(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn timed(bytes: usize, mut setup: impl FnMut(), mut run: impl FnMut()) -> (f64, f64, f64) {
    setup();
    run(); // warm-up
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        setup();
        let t = Instant::now();
        run();
        rates.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    median(rates)
}

fn huge_buffer(len: usize) -> memmap2::MmapMut {
    let m = memmap2::MmapOptions::new().len(len).map_anon().unwrap();
    let _ = m.advise(memmap2::Advice::HugePage);
    m
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).map_or(1024, |s| s.parse().expect("SIZE_MIB"));
    let dir = PathBuf::from(args.get(2).map_or("target/bench", |s| s.as_str()));
    std::fs::create_dir_all(&dir).unwrap();
    let size = mib << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
    let raw = dir.join("raw.bin");
    let out = dir.join("psv.npz");
    let report = |name: &str, r: (f64, f64, f64)| {
        println!(
            "{name:<44} {:>6.2} GB/s  (min {:.2}, max {:.2})",
            r.0, r.1, r.2
        );
        r.0
    };

    let memcpy = {
        let mut dst = huge_buffer(size);
        timed(size, || {}, || dst.copy_from_slice(&data))
    };
    report("memcpy", memcpy);
    // One `write` of the whole buffer into a new file: plain; after `fallocate`, as psv's save
    // does; and after `fallocate` with a CRC-32 of the same bytes computed meanwhile on the other
    // core. The last is not a limit: it is what reading the data a second time for the CRC (psv's
    // former design) costs the writer.
    let whole_write = |reserved: bool, crc_alongside: bool| {
        timed(
            size,
            || prepare(size, &[&raw]),
            || {
                let mut f = File::create(&raw).unwrap();
                if reserved {
                    reserve(&f, size);
                }
                std::thread::scope(|s| {
                    if crc_alongside {
                        s.spawn(|| {
                            let mut h = crc32fast::Hasher::new();
                            h.update(&data);
                            std::hint::black_box(h.finalize());
                        });
                    }
                    f.write_all(&data).unwrap();
                });
            },
        )
    };
    let write1 = whole_write(false, false);
    let write1f = whole_write(true, false);
    let write1f_crc = whole_write(true, true);
    let write2 = timed(
        size,
        || prepare(size, &[&raw]),
        || {
            let f = File::create(&raw).unwrap();
            f.set_len(size as u64).unwrap();
            std::thread::scope(|s| {
                for half in data.chunks(size / 2).enumerate() {
                    let f = &f;
                    s.spawn(move || {
                        f.write_all_at(half.1, (half.0 * (size / 2)) as u64)
                            .unwrap()
                    });
                }
            });
        },
    );
    let write2i = timed(
        size,
        || prepare(size, &[&raw]),
        || {
            let f = File::create(&raw).unwrap();
            f.set_len(size as u64).unwrap();
            let next = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let (f, next, data) = (&f, &next, &data);
                    s.spawn(move || loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = data.chunks(4 << 20).nth(k) else {
                            break;
                        };
                        f.write_all_at(chunk, (k * (4 << 20)) as u64).unwrap();
                    });
                }
            });
        },
    );
    report(
        "page-cache write, 2 threads pwrite 4 MiB interleaved",
        write2i,
    );
    // Appends in pieces of one size (psv writes 64 MiB pieces; see WRITE_PIECE_LEN).
    let pieces = |piece: usize| {
        timed(
            size,
            || prepare(size, &[&raw]),
            || {
                let mut f = File::create(&raw).unwrap();
                for chunk in data.chunks(piece) {
                    f.write_all(chunk).unwrap();
                }
            },
        )
    };
    for (label, piece) in [
        ("256 KiB", 256 << 10),
        ("1 MiB", 1 << 20),
        ("4 MiB", 4 << 20),
        ("64 MiB", 64 << 20),
    ] {
        report(
            &format!("page-cache write, 1 thread, {label} pieces"),
            pieces(piece),
        );
    }
    let write_limit = report("page-cache write, 1 thread write", write1)
        .max(report(
            "page-cache write, fallocate + 1 thread write",
            write1f,
        ))
        .max(report("page-cache write, 2 threads pwrite", write2));
    let write_crc = report("(fallocate + write, CRC-32 on the other core)", write1f_crc);
    File::create(&raw).unwrap().write_all(&data).unwrap();
    let read2 = timed(
        size,
        || prepare(size, &[]),
        || {
            let mut buf = huge_buffer(size);
            let f = File::open(&raw).unwrap();
            std::thread::scope(|s| {
                for (k, half) in buf.chunks_mut(size / 2).enumerate() {
                    let f = &f;
                    s.spawn(move || f.read_exact_at(half, (k * (size / 2)) as u64).unwrap());
                }
            });
            std::hint::black_box(&buf);
        },
    );
    let read_limit = report("page-cache read, 2 threads pread, fresh buf", read2);

    // psv through the C ABI: 8 float32 arrays.
    let n = size / 8 / 4;
    let cpath = CString::new(out.to_str().unwrap()).unwrap();
    let keys: Vec<CString> = (0..8)
        .map(|i| CString::new(format!("a{i}")).unwrap())
        .collect();
    let saver = psv_saver_new();
    for (i, chunk) in data.chunks(size / 8).enumerate() {
        let shape = [n as i64];
        assert_eq!(
            psv_saver_add(
                saver,
                keys[i].as_ptr(),
                chunk.as_ptr().cast(),
                PSV_DTYPE_F32,
                shape.as_ptr(),
                1
            ),
            PSV_OK
        );
    }
    let save = timed(
        size,
        || prepare(size, &[&out]),
        || {
            assert_eq!(psv_saver_save(saver, cpath.as_ptr(), null()), PSV_OK);
        },
    );
    report("psv save (8 x f32)", save);
    let restore_with = |verify: bool, mmap: bool| {
        let opts = psv_restore_options_new();
        psv_restore_options_set_verify_crc(opts, verify);
        psv_restore_options_set_mmap(opts, mmap);
        let r = timed(
            size,
            || prepare(size, &[]),
            || {
                let mut a: *mut psv_archive = null_mut();
                assert_eq!(psv_restore(cpath.as_ptr(), opts, &mut a), PSV_OK);
                if mmap {
                    // A lazy load is not a load: touch every byte.
                    let mut sum = 0u64;
                    for i in 0..psv_archive_count(a) {
                        let p = psv_archive_data(a, i).cast::<u8>();
                        // SAFETY: p points to nbytes bytes valid until psv_free.
                        let bytes =
                            unsafe { std::slice::from_raw_parts(p, psv_archive_nbytes(a, i)) };
                        sum += bytes.iter().step_by(64).map(|&b| b as u64).sum::<u64>();
                    }
                    std::hint::black_box(sum);
                }
                psv_free(a);
            },
        );
        psv_restore_options_free(opts);
        r
    };
    let r_crc = report("psv restore (copy, CRC checked)", restore_with(true, false));
    let r_nocrc = report("psv restore (copy, no CRC)", restore_with(false, false));
    let r_mmap = report(
        "psv restore (mmap, every page touched)",
        restore_with(false, true),
    );
    let dest = destinations(&dir, saver, size, save.0, r_crc);
    psv_saver_free(saver);
    let (save_us, restore_us) = small_arrays(&dir, 20_000, 1024);
    println!(
        "psv save, 20000 x 1 KiB (add_many + save)   {:>6.3} us/array  (min {:.3}, max {:.3})",
        save_us.0, save_us.1, save_us.2
    );
    println!(
        "psv restore, 20000 x 1 KiB (copy, CRC)       {:>6.3} us/array  (min {:.3}, max {:.3})",
        restore_us.0, restore_us.1, restore_us.2
    );
    println!();
    println!("save / write limit            {:.2}", save.0 / write_limit);
    println!("save / (write + CRC)          {:.2}", save.0 / write_crc);
    println!("restore (CRC) / read limit    {:.2}", r_crc / read_limit);
    println!("restore (no CRC) / read limit {:.2}", r_nocrc / read_limit);
    println!("mmap restore / read limit     {:.2}", r_mmap / read_limit);
    for (what, ratio) in dest {
        println!("{what:<37} {ratio:.2}");
    }
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&out);
}

/// Median (min, max) microseconds per array to save `n` arrays of `bytes` bytes (every array
/// added with one `psv_saver_add_many`, then saved) and to restore them (copy mode, CRC
/// checked; freeing is not timed), over 21 runs each after a warm-up.
/// The save destinations and caller memory, each against its own reference in the same run:
/// fd save vs the path save; save to a pre-touched buffer vs a two-thread memcpy; a stream into a
/// pipe drained by a reader thread vs a plain write loop into the same kind of pipe; restore
/// into a caller's pre-touched buffer vs into the library's own block; a stream restore from a
/// pipe fed by a writer thread vs a plain read loop of the same kind of pipe. Returns the
/// ratios.
fn destinations(
    dir: &Path,
    saver: *mut psv_saver,
    size: usize,
    path_save: f64,
    own_restore: f64,
) -> Vec<(&'static str, f64)> {
    use std::os::fd::AsRawFd;
    let report = |name: &str, r: (f64, f64, f64)| {
        println!(
            "{name:<44} {:>6.2} GB/s  (min {:.2}, max {:.2})",
            r.0, r.1, r.2
        );
        r.0
    };
    let fd_path = dir.join("fd.npz");
    let fd_save = report(
        "psv save to a caller's fd (regular file)",
        timed(
            size,
            || prepare(size, &[&fd_path]),
            || {
                let f = File::create(&fd_path).unwrap();
                assert_eq!(psv_saver_save_fd(saver, f.as_raw_fd(), null()), PSV_OK);
            },
        ),
    );
    let mut n_bytes = 0u64;
    assert_eq!(psv_saver_size(saver, null(), &mut n_bytes), PSV_OK);
    let n_bytes = n_bytes as usize;
    let mut buf = huge_buffer(n_bytes);
    buf.iter_mut().step_by(4096).for_each(|b| *b = 1);
    let to_memory = report(
        "psv save to a pre-touched buffer",
        timed(
            size,
            || prepare(0, &[]),
            || {
                assert_eq!(
                    psv_saver_save_to_buffer(saver, buf.as_mut_ptr().cast(), n_bytes, null()),
                    PSV_OK
                );
            },
        ),
    );
    let src: Vec<u8> = buf.to_vec();
    let memcpy2 = report(
        "two-thread memcpy into a pre-touched buffer",
        timed(
            size,
            || prepare(0, &[]),
            || {
                std::thread::scope(|s| {
                    for (d, c) in buf
                        .chunks_mut(n_bytes / 2 + 1)
                        .zip(src.chunks(n_bytes / 2 + 1))
                    {
                        s.spawn(move || d.copy_from_slice(c));
                    }
                });
            },
        ),
    );
    drop(src);
    // A pipe drained by a reader thread: psv's stream, then a plain write loop of as many bytes.
    let through_pipe = |psv: bool| {
        timed(
            size,
            || prepare(0, &[]),
            || {
                let (mut rx, tx) = os_pipe();
                let reader = std::thread::spawn(move || {
                    let mut chunk = vec![0u8; 1 << 20];
                    let mut got = 0usize;
                    loop {
                        match std::io::Read::read(&mut rx, &mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => got += k,
                        }
                    }
                    got
                });
                if psv {
                    assert_eq!(psv_saver_save_fd(saver, tx.as_raw_fd(), null()), PSV_OK);
                } else {
                    let mut w = &tx;
                    for chunk in buf[..n_bytes].chunks(2 << 20) {
                        w.write_all(chunk).unwrap();
                    }
                }
                drop(tx);
                assert_eq!(reader.join().unwrap(), n_bytes);
            },
        )
    };
    let stream = report("psv stream save into a pipe (drained)", through_pipe(true));
    let plain_pipe = report(
        "plain write loop into a pipe (drained)",
        through_pipe(false),
    );
    // Restore into caller memory, pre-touched, sized by a metadata-only restore.
    let cpath = CString::new(dir.join("fd.npz").to_str().unwrap()).unwrap();
    let meta = psv_restore_options_new();
    psv_restore_options_set_metadata_only(meta, true);
    let mut m: *mut psv_archive = null_mut();
    assert_eq!(psv_restore(cpath.as_ptr(), meta, &mut m), PSV_OK);
    let need = psv_archive_required_bytes(m);
    psv_free(m);
    psv_restore_options_free(meta);
    let mut into = huge_buffer(need);
    into.iter_mut().step_by(4096).for_each(|b| *b = 1);
    let restore_into = report(
        "psv restore into a pre-touched buffer (CRC)",
        timed(
            size,
            || prepare(0, &[]),
            || {
                let mut a: *mut psv_archive = null_mut();
                assert_eq!(
                    psv_restore_into(
                        cpath.as_ptr(),
                        null(),
                        into.as_mut_ptr().cast(),
                        need,
                        &mut a
                    ),
                    PSV_OK
                );
                psv_free(a);
            },
        ),
    );
    // A stream restore from a pipe fed by a writer thread (psv_restore_fd of the read end, which
    // cannot seek), into its own block and into the pre-touched buffer; then plain reads of as
    // many bytes from the same kind of pipe, into a reused buffer and into a fresh block.
    let archive_bytes = std::fs::read(&fd_path).unwrap();
    // 0: psv into its own block; 1: psv into the pre-touched caller buffer; 2: a plain read
    // loop into one reused 1 MiB buffer; 3: a plain read of the whole stream into a fresh block.
    let from_pipe = |how: u8| {
        timed(
            size,
            || prepare(size, &[]),
            || {
                let (rx, mut tx) = os_pipe();
                let bytes = &archive_bytes;
                let into_ptr = into.as_ptr() as usize;
                std::thread::scope(|s| {
                    s.spawn(move || {
                        for chunk in bytes.chunks(2 << 20) {
                            tx.write_all(chunk).unwrap();
                        }
                    });
                    let mut a: *mut psv_archive = null_mut();
                    match how {
                        0 => {
                            assert_eq!(psv_restore_fd(rx.as_raw_fd(), null(), &mut a), PSV_OK);
                            psv_free(a);
                        }
                        1 => {
                            let buf = into_ptr as *mut std::ffi::c_void;
                            let st = psv_restore_fd_into(rx.as_raw_fd(), null(), buf, need, &mut a);
                            assert_eq!(st, PSV_OK);
                            psv_free(a);
                        }
                        2 => {
                            let mut chunk = vec![0u8; 1 << 20];
                            let mut got = 0usize;
                            loop {
                                match std::io::Read::read(&mut &rx, &mut chunk) {
                                    Ok(0) | Err(_) => break,
                                    Ok(k) => got += k,
                                }
                            }
                            assert_eq!(got, bytes.len());
                        }
                        _ => {
                            let mut block = huge_buffer(bytes.len());
                            std::io::Read::read_exact(&mut &rx, &mut block[..]).unwrap();
                        }
                    }
                });
            },
        )
    };
    let stream_restore = report("psv stream restore from a pipe (CRC)", from_pipe(0));
    let stream_into = report("psv stream restore, pre-touched buffer", from_pipe(1));
    let plain_read = report("plain read loop of a pipe (1 MiB buffer)", from_pipe(2));
    let fresh_read = report("plain read of a pipe into a fresh block", from_pipe(3));
    drop(archive_bytes);
    let _ = std::fs::remove_file(&fd_path);
    vec![
        ("fd save / path save", fd_save / path_save),
        ("save to memory / 2-thread memcpy", to_memory / memcpy2),
        ("stream into pipe / plain pipe writes", stream / plain_pipe),
        (
            "restore into buffer / own block",
            restore_into / own_restore,
        ),
        (
            "stream restore from pipe / plain pipe reads",
            stream_restore / plain_read,
        ),
        (
            "stream restore into buffer / plain pipe reads",
            stream_into / plain_read,
        ),
        (
            "stream restore / plain read into fresh block",
            stream_restore / fresh_read,
        ),
    ]
}

fn small_arrays(dir: &Path, n: usize, bytes: usize) -> ((f64, f64, f64), (f64, f64, f64)) {
    const SMALL_RUNS: usize = 21;
    let data: Vec<u8> = (0..n * bytes).map(|i| (i * 31 + i / 977) as u8).collect();
    let keys: Vec<CString> = (0..n)
        .map(|i| CString::new(format!("a{i}")).unwrap())
        .collect();
    let key_ptrs: Vec<*const std::ffi::c_char> = keys.iter().map(|k| k.as_ptr()).collect();
    let data_ptrs: Vec<*const std::ffi::c_void> =
        data.chunks(bytes).map(|c| c.as_ptr().cast()).collect();
    let dtypes: Vec<psv_dtype> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                PSV_DTYPE_I32
            } else {
                PSV_DTYPE_F32
            }
        })
        .collect();
    let shapes = vec![(bytes / 4) as i64; n];
    let ndims = vec![1usize; n];
    let path = dir.join("small.npz");
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let per_array = |xs: Vec<f64>| {
        let (med, lo, hi) = median(xs);
        (
            med * 1e6 / n as f64,
            lo * 1e6 / n as f64,
            hi * 1e6 / n as f64,
        )
    };
    let mut saves = Vec::new();
    for run in 0..=SMALL_RUNS {
        prepare(n * bytes * 2, &[&path]);
        let t = Instant::now();
        let s = psv_saver_new();
        assert_eq!(
            psv_saver_add_many(
                s,
                n,
                key_ptrs.as_ptr(),
                data_ptrs.as_ptr(),
                dtypes.as_ptr(),
                shapes.as_ptr(),
                ndims.as_ptr()
            ),
            PSV_OK
        );
        assert_eq!(psv_saver_save(s, cpath.as_ptr(), null()), PSV_OK);
        psv_saver_free(s);
        if run > 0 {
            saves.push(t.elapsed().as_secs_f64());
        }
    }
    let mut restores = Vec::new();
    for run in 0..=SMALL_RUNS {
        prepare(n * bytes * 2, &[]);
        let t = Instant::now();
        let mut a: *mut psv_archive = null_mut();
        assert_eq!(psv_restore(cpath.as_ptr(), null(), &mut a), PSV_OK);
        assert_eq!(psv_archive_count(a), n);
        let elapsed = t.elapsed().as_secs_f64();
        psv_free(a);
        if run > 0 {
            restores.push(elapsed);
        }
    }
    let _ = std::fs::remove_file(&path);
    (per_array(saves), per_array(restores))
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
