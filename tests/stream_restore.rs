//! The stream restore (`psv::restore_stream`, and `psv::restore` of a pipe): psv's stored and
//! compressed saves and numpy's files (tests/stream/, made by make_fixtures.py with numpy)
//! read once, front to back, through a real pipe fed by a writer thread, give exactly what the
//! path restore gives. Data descriptors, ZIP64 end records, keys, metadata-only, caller
//! memory, progress and cancel; a stream cut at every byte is FORMAT; the hostile corpus gives
//! the path restore's status (or a documented stream-specific one), never a panic or a hang.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use psv::{restore, restore_stream, Archive, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver};

use common::pattern;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/stream").join(name)
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

/// Runs `read` on the read end of a pipe that a writer thread fills with `bytes` (then
/// closes); the writer's error (EPIPE when the reader stops early) is ignored.
fn through_pipe<T>(bytes: &[u8], read: impl FnOnce(&std::fs::File) -> T) -> T {
    let (rx, mut tx) = os_pipe();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.write_all(bytes);
        });
        let out = read(&rx);
        drop(rx);
        out
    })
}

/// Asserts that two archives describe the same arrays with the same bytes, 64-byte aligned.
fn assert_same(got: &Archive, want: &Archive, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: array count");
    for (i, (g, w)) in got.arrays().iter().zip(want.arrays()).enumerate() {
        assert_eq!(g.key, w.key, "{what}: key {i}");
        assert_eq!(g.descr_string, w.descr_string, "{what}: {}", g.key);
        assert_eq!(g.shape, w.shape, "{what}: {}", g.key);
        assert_eq!(g.fortran_order, w.fortran_order, "{what}: {}", g.key);
        assert_eq!(g.nbytes, w.nbytes, "{what}: {}", g.key);
        assert_eq!(g.compressed, w.compressed, "{what}: {}", g.key);
        assert_eq!(g.offset % 64, 0, "{what}: {}", g.key);
        if !got.is_metadata_only() {
            assert_eq!(got.data(i), want.data(i), "{what}: data of {}", g.key);
            assert_eq!(
                got.data_ptr(i).unwrap() as usize % 64,
                0,
                "{what}: {}",
                g.key
            );
        }
    }
    assert_eq!(got.skipped(), want.skipped(), "{what}: skipped members");
    if want.is_metadata_only() {
        // (A path restore of a psv file into its own block may use an image of the file,
        // larger than the packed size.)
        assert_eq!(
            got.required_bytes(),
            want.required_bytes(),
            "{what}: required bytes"
        );
    }
}

/// Small arrays, large ones (several 4 MiB chunks), an empty one, a 0-d one.
fn arrays() -> Vec<(String, Vec<u8>, Vec<u64>)> {
    let mut v = Vec::new();
    for (i, n) in [100usize, 9 << 20, 0, 70_000, 8, (2 << 20) + 4]
        .into_iter()
        .enumerate()
    {
        let shape = if n == 8 { vec![] } else { vec![n as u64 / 4] };
        let n = if n == 8 { 4 } else { n / 4 * 4 };
        v.push((format!("a{i}"), pattern(n, i as u64 + 7), shape));
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

fn scratch(name: &str) -> PathBuf {
    common::scratch("stream", name)
}

#[test]
fn psv_saves_restore_from_a_pipe_as_from_their_path() {
    let dir = scratch("psv");
    let arrays = arrays();
    let s = saver(&arrays);
    for level in [0u32, 1, 6] {
        let opts = SaveOptions::default().compression(level);
        let path = s.save(dir.join(format!("z{level}")), &opts).unwrap();
        let want = restore(&path, &RestoreOptions::default()).unwrap();
        // The bytes of the path save and those save_to_writer streams (the same, tested in
        // destinations.rs): both through a pipe.
        let file_bytes = std::fs::read(&path).unwrap();
        let mut streamed = Vec::new();
        s.save_to_writer(&mut streamed, &opts, None).unwrap();
        for (what, bytes) in [("file", &file_bytes), ("save_to_writer", &streamed)] {
            for threads in [1usize, 0] {
                let o = RestoreOptions::default().threads(threads);
                let got = through_pipe(bytes, |rx| restore_stream(rx, &o)).unwrap();
                assert_same(&got, &want, &format!("{what}, level {level}"));
                for (i, (_, data, _)) in arrays.iter().enumerate() {
                    assert_eq!(got.data(i).unwrap(), &data[..]);
                }
            }
        }
        // restore() of a pipe (Source::File that cannot seek) takes the same path.
        let got = through_pipe(&file_bytes, |rx| restore(rx, &RestoreOptions::default())).unwrap();
        assert_same(&got, &want, &format!("restore(pipe), level {level}"));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn numpy_files_restore_from_a_pipe_as_from_their_path() {
    for name in [
        "numpy_savez.npz",
        "numpy_savez_compressed.npz",
        // Data descriptors (numpy.savez into a pipe): stored members end after their .npy
        // data, deflated ones end themselves.
        "numpy_savez_pipe.npz",
        "numpy_savez_compressed_pipe.npz",
        "zipfile_pipe_deflated_text.npz",
    ] {
        let path = fixture(name);
        let bytes = std::fs::read(&path).unwrap();
        for opts in [
            RestoreOptions::default(),
            RestoreOptions::default().native_endian(true),
            RestoreOptions::default().verify_crc(false).threads(1),
            RestoreOptions::default().metadata_only(true),
        ] {
            let want = restore(&path, &opts).unwrap();
            let got = through_pipe(&bytes, |rx| restore_stream(rx, &opts))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_same(&got, &want, name);
        }
        let want = restore(&path, &RestoreOptions::default()).unwrap();
        assert!(!want.is_empty(), "{name}");
    }
    // The numpy arrays themselves (tests/stream/make_fixtures.py): the values, not only
    // agreement with the path restore.
    let a = restore_stream(
        &std::fs::read(fixture("numpy_savez_pipe.npz")).unwrap()[..],
        &RestoreOptions::default().native_endian(true),
    )
    .unwrap();
    let ramp: Vec<u8> = (0..1000).map(|i| (i % 251) as u8).collect();
    assert_eq!(a.data(a.find("ramp").unwrap()).unwrap(), &ramp[..]);
    let be = a.find("big_endian").unwrap();
    assert_eq!(a.arrays()[be].descr_string, "<i4");
    let want: Vec<u8> = (0..300i32).flat_map(|i| (i * -3).to_le_bytes()).collect();
    assert_eq!(a.data(be).unwrap(), &want[..]);
    let grid = a.find("grid").unwrap();
    assert_eq!(a.arrays()[grid].shape, vec![10, 20]);
    let want: Vec<u8> = (0..200)
        .flat_map(|i| (i as f64 / 7.0).to_le_bytes())
        .collect();
    assert_eq!(a.data(grid).unwrap(), &want[..]);
    let f = a.find("fortran").unwrap();
    assert!(a.arrays()[f].fortran_order);
    assert_eq!(
        a.arrays()[a.find("scalar").unwrap()].shape,
        Vec::<u64>::new()
    );
    assert_eq!(a.arrays()[a.find("empty").unwrap()].nbytes, 0);
}

#[test]
fn a_stored_non_array_member_with_a_data_descriptor_is_unsupported() {
    let path = fixture("zipfile_pipe_stored_text.npz");
    let bytes = std::fs::read(&path).unwrap();
    // The path restore reads it (the central directory gives the sizes)...
    assert_eq!(restore(&path, &RestoreOptions::default()).unwrap().len(), 1);
    // ... the stream restore cannot delimit notes.txt and says so.
    let e = through_pipe(&bytes, |rx| restore_stream(rx, &RestoreOptions::default()))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{}", e.message());
    assert!(
        e.message().contains("notes.txt") && e.message().contains("data descriptor"),
        "{}",
        e.message()
    );
}

#[test]
fn keys_metadata_only_and_caller_memory() {
    let dir = scratch("keys");
    let arrays = arrays();
    let s = saver(&arrays);
    for level in [0u32, 6] {
        let path = s
            .save(
                dir.join(format!("k{level}")),
                &SaveOptions::default().compression(level),
            )
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // Keys: in the order asked, the others read past.
        let opts = RestoreOptions::default().keys(["a5", "a1"]);
        let got = through_pipe(&bytes, |rx| restore_stream(rx, &opts)).unwrap();
        assert_same(&got, &restore(&path, &opts).unwrap(), "keys");
        assert_eq!(got.arrays()[0].key, "a5");
        assert_eq!(got.data(1).unwrap(), &arrays[1].1[..]);
        let missing = RestoreOptions::default().keys(["a1", "nope"]);
        let e = restore_stream(&bytes[..], &missing).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{}", e.message());
        let twice = RestoreOptions::default().keys(["a1", "a1"]);
        let e = restore_stream(&bytes[..], &twice).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArg);

        // Metadata only: the listing and the size caller memory needs.
        let meta = RestoreOptions::default().metadata_only(true);
        let listing = through_pipe(&bytes, |rx| restore_stream(rx, &meta)).unwrap();
        assert!(listing.is_metadata_only());
        assert_same(&listing, &restore(&path, &meta).unwrap(), "metadata only");
        let need = listing.required_bytes();

        // Caller memory of exactly that size.
        let mut raw = vec![0u8; need + 64];
        let pad = raw.as_ptr().align_offset(64);
        let buf = &mut raw[pad..pad + need];
        let base = buf.as_ptr() as usize;
        let a = through_pipe(&bytes, |rx| {
            psv::restore_stream_into(rx, &RestoreOptions::default(), &mut *buf)
        })
        .unwrap();
        assert_eq!(a.block_ptr() as usize, base);
        for (k, data, _) in &arrays {
            let info = &a.arrays()[a.find(k).unwrap()];
            assert_eq!(
                &buf[info.offset..info.offset + info.nbytes],
                &data[..],
                "{k}"
            );
        }
        // Too small: the rest is read, and the message names the size needed.
        let e = through_pipe(&bytes, |rx| {
            psv::restore_stream_into(rx, &RestoreOptions::default(), &mut buf[..need - 64])
        })
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArg);
        assert!(e.message().contains(&need.to_string()), "{}", e.message());
        let e = psv::restore_stream_into(&bytes[..], &RestoreOptions::default(), &mut buf[1..])
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArg);
        assert!(e.message().contains("aligned"), "{}", e.message());

        // The block limit: LIMIT before the array is read.
        let small = RestoreOptions::default().max_total_bytes(Some(1 << 20));
        let e = restore_stream(&bytes[..], &small).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Limit, "{}", e.message());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn progress_reports_and_cancels() {
    let arrays = arrays();
    let bytes = saver(&arrays).to_vec(&SaveOptions::default()).unwrap();
    let mut calls = Vec::new();
    let a =
        psv::restore_stream_with_progress(&bytes[..], &RestoreOptions::default(), &mut |d, t| {
            calls.push((d, t));
            true
        })
        .unwrap();
    assert_eq!(a.len(), arrays.len());
    assert_eq!(
        calls.last(),
        Some(&(bytes.len() as u64, bytes.len() as u64))
    );
    let e = through_pipe(&bytes, |rx| {
        psv::restore_stream_with_progress(rx, &RestoreOptions::default(), &mut |_, _| false)
    })
    .err()
    .unwrap();
    assert_eq!(e.kind(), ErrorKind::Aborted);
}

#[test]
fn the_stream_is_read_up_to_the_end_record_and_no_further() {
    let arrays = arrays();
    let s = saver(&arrays[..4]);
    let mut archives = vec![
        ("psv stored", s.to_vec(&SaveOptions::default()).unwrap()),
        (
            "psv deflated",
            s.to_vec(&SaveOptions::default().compression(1)).unwrap(),
        ),
    ];
    for name in [
        "numpy_savez.npz",
        "numpy_savez_compressed.npz",
        // Stored members with data descriptors end where their .npy header says.
        "numpy_savez_pipe.npz",
    ] {
        archives.push((name, std::fs::read(fixture(name)).unwrap()));
    }
    for (what, archive) in archives {
        let mut bytes = archive.clone();
        bytes.extend_from_slice(b"NEXT THING");
        for opts in [
            RestoreOptions::default(),
            RestoreOptions::default().metadata_only(true),
        ] {
            let mut reader = &bytes[..];
            let a = restore_stream(&mut reader, &opts).unwrap();
            assert!(!a.is_empty(), "{what}");
            assert_eq!(reader, b"NEXT THING", "{what}: the bytes after the archive");
        }
        // Through a pipe: the next bytes are still there to read.
        let (rx, mut tx) = os_pipe();
        std::thread::scope(|sc| {
            sc.spawn(move || tx.write_all(&bytes).unwrap());
            let a = restore_stream(&rx, &RestoreOptions::default()).unwrap();
            assert!(!a.is_empty());
            let mut rest = Vec::new();
            (&rx).read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"NEXT THING", "{what}: pipe");
        });
    }
}

/// A reader that gives one byte per call: every buffer boundary is crossed.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn a_stream_cut_at_any_byte_is_a_format_error() {
    let small: Vec<(String, Vec<u8>, Vec<u64>)> = vec![
        ("x".into(), pattern(40, 1), vec![10]),
        ("y".into(), pattern(0, 2), vec![0]),
        ("zz".into(), pattern(4, 3), vec![]),
    ];
    let s = saver(&small);
    let mut files = vec![
        (
            "psv stored".to_string(),
            s.to_vec(&SaveOptions::default()).unwrap(),
        ),
        (
            "psv deflated".to_string(),
            s.to_vec(&SaveOptions::default().compression(6)).unwrap(),
        ),
    ];
    for name in [
        "numpy_savez.npz",
        "numpy_savez_compressed.npz",
        "numpy_savez_pipe.npz",
        "numpy_savez_compressed_pipe.npz",
    ] {
        files.push((name.to_string(), std::fs::read(fixture(name)).unwrap()));
    }
    let opts = RestoreOptions::default().threads(1);
    for (what, bytes) in &files {
        let whole = restore_stream(Trickle(bytes), &opts).unwrap();
        assert!(!whole.is_empty(), "{what}");
        for cut in 0..bytes.len() {
            let e = restore_stream(&bytes[..cut], &opts)
                .err()
                .unwrap_or_else(|| panic!("{what}: cut at {cut} restored"));
            assert_eq!(
                e.kind(),
                ErrorKind::Format,
                "{what}: cut at {cut}: {}",
                e.message()
            );
        }
    }
    // One cut through a real pipe: the writer closes early, the restore ends (no hang).
    let (what, bytes) = &files[0];
    let e = through_pipe(&bytes[..bytes.len() / 2], |rx| restore_stream(rx, &opts))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Format, "{what}: {}", e.message());
    assert!(e.message().contains("truncated"), "{}", e.message());
}

#[test]
fn zip64_end_records_of_many_members() {
    // 65536 members: the count needs the ZIP64 end record and locator.
    let data = [7u8; 4];
    let mut s = Saver::new();
    let keys: Vec<String> = (0..65536).map(|i| format!("k{i}")).collect();
    for k in &keys {
        s.add(k, &data, Dtype::U8, &[4]).unwrap();
    }
    let bytes = s.to_vec(&SaveOptions::default()).unwrap();
    let want = restore(&bytes[..], &RestoreOptions::default()).unwrap();
    let got = through_pipe(&bytes, |rx| restore_stream(rx, &RestoreOptions::default())).unwrap();
    assert_eq!(got.len(), 65536);
    assert_same(&got, &want, "65536 members");
    // The member limit applies while streaming.
    let e = restore_stream(&bytes[..], &RestoreOptions::default().max_members(1000))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Limit, "{}", e.message());
}

#[test]
fn corruption_and_reader_errors() {
    let arrays = arrays();
    let bytes = saver(&arrays[..2]).to_vec(&SaveOptions::default()).unwrap();
    let listing = restore(&bytes[..], &RestoreOptions::default()).unwrap();
    // A flipped array byte: CRC.
    let at = listing.arrays()[1].file_offset.unwrap() as usize + 100;
    let mut bad = bytes.clone();
    bad[at] ^= 1;
    let e = restore_stream(&bad[..], &RestoreOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Crc, "{}", e.message());
    assert!(restore_stream(&bad[..], &RestoreOptions::default().verify_crc(false)).is_ok());
    // A central directory that disagrees with the local header (its CRC): FORMAT.
    let central = bytes.len() - 22 - 2 * (46 + 6);
    assert_eq!(&bytes[central..central + 4], b"PK\x01\x02");
    let mut bad = bytes.clone();
    bad[central + 16] ^= 1;
    let e = restore_stream(&bad[..], &RestoreOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Format, "{}", e.message());
    assert!(e.message().contains("CRC-32"), "{}", e.message());
    // Not a zip at all, empty, a .npy.
    for (input, words) in [
        (&b"hello world, no zip here"[..], "not a zip"),
        (&b""[..], "empty"),
        (&b"\x93NUMPY\x01\x00"[..], "single .npy"),
    ] {
        let e = restore_stream(input, &RestoreOptions::default())
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Format);
        assert!(e.message().contains(words), "{}", e.message());
    }
    // A reader that fails: IO, with its error.
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::from_raw_os_error(5));
            }
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let e = restore_stream(Failing(&bytes[..5000]), &RestoreOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Io, "{}", e.message());
    assert_eq!(e.os_code(), Some(5));
}

#[test]
fn compressed_members_decoded_on_the_pool_or_as_they_arrive() {
    // Members up to 16 MiB compressed are read whole and decoded on the pool; a larger one
    // (random bytes do not compress) is decoded on the calling thread as it arrives.
    let big = pattern(20 << 20, 99);
    let small: Vec<(String, Vec<u8>, Vec<u64>)> = (0..40)
        .map(|i| {
            (
                format!("s{i}"),
                pattern(1000 + 4 * i, i as u64),
                vec![250 + i as u64],
            )
        })
        .collect();
    let mut s = Saver::new();
    for (k, d, shape) in &small {
        s.add(k, d, Dtype::F32, shape).unwrap();
    }
    s.add("big", &big, Dtype::U8, &[big.len() as u64]).unwrap();
    let bytes = s.to_vec(&SaveOptions::default().compression(1)).unwrap();
    let want = restore(&bytes[..], &RestoreOptions::default()).unwrap();
    for threads in [1usize, 2] {
        let o = RestoreOptions::default()
            .threads(threads)
            .native_endian(true);
        let got = through_pipe(&bytes, |rx| restore_stream(rx, &o)).unwrap();
        assert_same(&got, &want, "compressed");
        assert_eq!(got.data(got.find("big").unwrap()).unwrap(), &big[..]);
    }
    // A flipped bit inside a small member's deflate stream: CRC or FORMAT, never success.
    let small_bytes = saver(&small[..3])
        .to_vec(&SaveOptions::default().compression(6))
        .unwrap();
    let listing = restore(&small_bytes[..], &RestoreOptions::default()).unwrap();
    assert!(listing.arrays()[0].compressed);
    let mut bad = small_bytes.clone();
    bad[200] ^= 0x10;
    let e = restore_stream(&bad[..], &RestoreOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(e.kind(), ErrorKind::Crc | ErrorKind::Format),
        "{:?}: {}",
        e.kind(),
        e.message()
    );
}

/// The status name of an error kind, as tests/corpus/expected.txt spells it.
fn status_name(r: &psv::Result<Archive>) -> &'static str {
    match r {
        Ok(_) => "PSV_OK",
        Err(e) => match e.kind() {
            ErrorKind::Format => "PSV_ERR_FORMAT",
            ErrorKind::Unsupported => "PSV_ERR_UNSUPPORTED",
            ErrorKind::Limit => "PSV_ERR_LIMIT",
            ErrorKind::Crc => "PSV_ERR_CRC",
            ErrorKind::Overflow => "PSV_ERR_OVERFLOW",
            ErrorKind::NotFound => "PSV_ERR_NOT_FOUND",
            ErrorKind::NoMem => "PSV_ERR_NOMEM",
            ErrorKind::InvalidArg => "PSV_ERR_INVALID_ARG",
            ErrorKind::BadDtype => "PSV_ERR_BAD_DTYPE",
            ErrorKind::Io => "PSV_ERR_IO",
            _ => "other",
        },
    }
}

/// Corpus files whose stream status differs from the path restore's, and why: the stream
/// reads local headers first and checks the central directory against them, where the path
/// restore trusts the central directory (as CPython does).
const STREAM_STATUS: &[(&str, &str)] = &[
    // Junk before the first local header: a stream must start with a zip record (np.load
    // refuses such files too).
    ("ok_prefix_junk.npz", "PSV_ERR_FORMAT"),
    // The local header's CRC or sizes disagree with the central directory's: the stream
    // cannot know which one is right.
    ("ok_local_crc_wrong.npz", "PSV_ERR_FORMAT"),
    ("ok_local_sizes_version_garbage.npz", "PSV_ERR_FORMAT"),
    // The local header says encrypted; the central directory does not.
    ("ok_local_encryption_flag_only.npz", "PSV_ERR_UNSUPPORTED"),
    // The central CRC is wrong, the data matches the local one: records disagree.
    ("flip_central_crc.npz", "PSV_ERR_FORMAT"),
    // The central directory claims a 1 TiB member; the local header gives the real size, in
    // which the .npy header's 1 TiB array does not fit.
    ("bomb_claims_terabyte_array.npz", "PSV_ERR_FORMAT"),
];

#[test]
fn hostile_corpus_gives_the_path_status_or_the_documented_stream_one() {
    let dir = root().join("tests/corpus");
    let text = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
    let opts = RestoreOptions::default()
        .threads(2)
        .max_total_bytes(Some(1 << 30));
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (file, expected) = (parts.next().unwrap(), parts.next().unwrap());
        let want = STREAM_STATUS
            .iter()
            .find(|(f, _)| *f == file)
            .map_or(expected, |(_, s)| s);
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let got = std::panic::catch_unwind(|| {
            let r = restore_stream(&bytes[..], &opts);
            (status_name(&r), r.err().map(|e| e.message().to_string()))
        });
        checked += 1;
        match got {
            Ok((status, _)) if status == want => {}
            Ok((status, msg)) => {
                failures.push(format!("{file}: want {want}, got {status} ({msg:?})"))
            }
            Err(_) => failures.push(format!("{file}: PANIC")),
        }
    }
    assert!(checked >= 40, "only {checked} corpus files");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The corpus directory exists (a guard for the test above).
#[test]
fn fixtures_exist() {
    assert!(Path::new(&fixture("numpy_savez_pipe.npz")).exists());
}
