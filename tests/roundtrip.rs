//! Round trips through the Rust API, cross-checked with the zip crate (which verifies CRCs when
//! a member is read to its end) and with byte-level checks of the layout we promise.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use psv::{restore, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver};

use common::pattern;

fn scratch(name: &str) -> PathBuf {
    common::scratch("rt", name)
}

/// Reads every member with the zip crate (to the end, so it checks the CRC) and returns
/// (name, bytes, data start offset).
fn zip_members(path: &Path) -> Vec<(String, Vec<u8>, u64)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            (
                f.name().unwrap().to_string(),
                bytes,
                f.data_start().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_numeric_dtype_round_trips_and_the_zip_crate_agrees() {
    let dir = scratch("dtypes");
    let datas: Vec<(Dtype, Vec<u8>)> = psv::ALL_DTYPES
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let mut bytes = pattern(d.itemsize() * 15, i as u64);
            if d == Dtype::Bool {
                bytes.iter_mut().for_each(|b| *b &= 1);
            }
            (d, bytes)
        })
        .collect();
    let mut saver = Saver::new();
    for (d, bytes) in &datas {
        saver.add(&format!("{d:?}"), bytes, *d, &[3, 5]).unwrap();
    }
    let path = saver
        .save(dir.join("all"), &SaveOptions::default())
        .unwrap();
    assert_eq!(path, dir.join("all.npz"));

    let members = zip_members(&path);
    assert_eq!(members.len(), datas.len());
    for ((name, bytes, data_start), (d, data)) in members.iter().zip(&datas) {
        assert_eq!(name, &format!("{d:?}.npy"));
        assert_eq!(data_start % 64, 0, "{name}: payload not 64-aligned");
        let header_len = bytes.len() - data.len();
        assert_eq!(header_len % 64, 0);
        assert_eq!(&bytes[header_len..], &data[..]);
    }

    let a = restore(&path, &RestoreOptions::default()).unwrap();
    assert_eq!(a.len(), datas.len());
    for (i, (d, data)) in datas.iter().enumerate() {
        let info = &a.arrays()[i];
        assert_eq!(info.dtype, Some(*d));
        assert_eq!(info.shape, vec![3, 5]);
        assert_eq!(a.data(i).unwrap(), &data[..]);
        assert_eq!(a.data_ptr(i).unwrap() as usize % 64, 0);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn large_members_are_chunked_and_restored_with_any_thread_count() {
    let dir = scratch("large");
    let big = pattern(37 << 20, 7); // 37 MiB: ten chunks, the last one partial
    let small = pattern(1000, 8);
    let mut saver = Saver::new();
    saver.add("small0", &small, Dtype::U8, &[1000]).unwrap();
    saver
        .add("big", &big, Dtype::F64, &[(37 << 20) / 8])
        .unwrap();
    saver.add("small1", &small, Dtype::I8, &[10, 100]).unwrap();
    for threads in [1, 2, 3] {
        let opts = SaveOptions::default().threads(threads).fsync(threads == 1);
        let path = saver.save(dir.join("big.npz"), &opts).unwrap();
        for (_, bytes, start) in zip_members(&path) {
            assert_eq!(start % 64, 0);
            assert!(bytes.len() >= 1000);
        }
        let ropts = RestoreOptions::default().threads(threads);
        let a = restore(&path, &ropts).unwrap();
        assert_eq!(a.data(a.find("big").unwrap()).unwrap(), &big[..]);
        assert_eq!(a.data(a.find("small1").unwrap()).unwrap(), &small[..]);
        assert_eq!(a.block().len() % 64, 0);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn zero_d_empty_and_unicode_keys() {
    let dir = scratch("edge");
    let one = 2.5f64.to_ne_bytes();
    let mut saver = Saver::new();
    saver.add("scalar", &one, Dtype::F64, &[]).unwrap();
    saver.add("empty", &[], Dtype::F32, &[0, 3]).unwrap();
    saver
        .add("中文/with space", &[1, 2, 3], Dtype::U8, &[3])
        .unwrap();
    saver
        .add_descr(
            "rec",
            &[0u8; 24],
            "[('a', '<i4'), ('b', '<f8', (2,)), ('', '|V4')]",
            &[1],
            false,
        )
        .unwrap();
    saver.add_descr("nothing", &[], "[]", &[5], false).unwrap();
    let path = saver
        .save(dir.join("edge"), &SaveOptions::default())
        .unwrap();
    let names: Vec<String> = zip_members(&path).into_iter().map(|m| m.0).collect();
    assert_eq!(
        names,
        [
            "scalar.npy",
            "empty.npy",
            "中文/with space.npy",
            "rec.npy",
            "nothing.npy"
        ]
    );
    let a = restore(&path, &RestoreOptions::default()).unwrap();
    assert_eq!(a.arrays()[0].shape, Vec::<u64>::new());
    assert_eq!(a.data(0).unwrap(), &one);
    assert_eq!(a.arrays()[1].nbytes, 0);
    assert_eq!(a.find("中文/with space"), Some(2));
    assert_eq!(
        a.arrays()[3].descr_string,
        "[('a', '<i4'), ('b', '<f8', (2,)), ('', '|V4')]"
    );
    assert_eq!(a.arrays()[3].nbytes, 24);
    assert_eq!(a.arrays()[4].nbytes, 0);
    assert_eq!(a.arrays()[4].shape, vec![5]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn zip64_end_records_for_65536_members() {
    let dir = scratch("many");
    let vals: Vec<[u8; 4]> = (0..65536u32).map(|i| i.to_ne_bytes()).collect();
    let mut saver = Saver::new();
    for (i, v) in vals.iter().enumerate() {
        saver.add(&format!("k{i}"), v, Dtype::U32, &[1]).unwrap();
    }
    let path = saver
        .save(dir.join("many"), &SaveOptions::default())
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let eocd = &bytes[bytes.len() - 22..];
    assert_eq!(&eocd[..4], b"PK\x05\x06");
    assert_eq!(u16::from_le_bytes([eocd[10], eocd[11]]), 0xFFFF);
    let locator = &bytes[bytes.len() - 42..bytes.len() - 22];
    assert_eq!(&locator[..4], b"PK\x06\x07");
    assert_eq!(
        zip::ZipArchive::new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .len(),
        65536
    );
    let a = restore(&path, &RestoreOptions::default()).unwrap();
    assert_eq!(a.len(), 65536);
    for i in [0usize, 1, 65534, 65535] {
        assert_eq!(a.data(a.find(&format!("k{i}")).unwrap()).unwrap(), &vals[i]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corruption_and_truncation_are_detected() {
    let dir = scratch("corrupt");
    let data = pattern(100_000, 3);
    let mut saver = Saver::new();
    saver.add("x", &data, Dtype::U8, &[100_000]).unwrap();
    let path = saver.save(dir.join("c"), &SaveOptions::default()).unwrap();
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    flipped[50_000] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let e = restore(&path, &RestoreOptions::default()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Crc, "{e}");
    assert!(e.message().contains("\"x.npy\""), "{e}");
    let unchecked = RestoreOptions::default().verify_crc(false);
    let a = restore(&path, &unchecked).unwrap();
    assert_ne!(a.data(0).unwrap(), &data[..]);

    for cut in [0, 10, 100, 1000, 50_000, good.len() - 23, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        let e = restore(&path, &RestoreOptions::default()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Format, "cut at {cut}: {e}");
    }
    std::fs::write(&path, b"this is not a zip file at all, not even close").unwrap();
    assert_eq!(
        restore(&path, &RestoreOptions::default())
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Format
    );
    let e = restore(dir.join("missing"), &RestoreOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Io);
    // Named as given (issue 13: the path is opened as given; ".npz" is only a fallback).
    assert!(e.message().contains("missing: "), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn limits_are_enforced_before_allocating() {
    let dir = scratch("limits");
    let data = pattern(4096, 1);
    let mut saver = Saver::new();
    saver.add("x", &data, Dtype::U8, &[4096]).unwrap();
    saver.add("y", &data, Dtype::U8, &[4096]).unwrap();
    let path = saver.save(dir.join("l"), &SaveOptions::default()).unwrap();
    let small_block = RestoreOptions::default().max_total_bytes(Some(5000));
    assert_eq!(
        restore(&path, &small_block).err().unwrap().kind(),
        ErrorKind::Limit
    );
    let short_headers = RestoreOptions::default().max_header_len(32);
    assert_eq!(
        restore(&path, &short_headers).err().unwrap().kind(),
        ErrorKind::Limit
    );
    let few_members = RestoreOptions::default().max_members(1);
    assert_eq!(
        restore(&path, &few_members).err().unwrap().kind(),
        ErrorKind::Limit
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn failed_saves_leave_no_temp_file_and_the_old_target_intact() {
    let dir = scratch("atomic");
    let data = pattern(1 << 20, 5);
    let mut saver = Saver::new();
    saver.add("x", &data, Dtype::U8, &[1 << 20]).unwrap();
    let e = saver
        .save(dir.join("no/such/dir/f"), &SaveOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.message().contains("no/such/dir/f.npz"), "{e}");

    // Saving over an existing file replaces it whole and leaves only the target behind.
    std::fs::write(dir.join("t.npz"), b"old").unwrap();
    saver
        .save(dir.join("t.npz"), &SaveOptions::default())
        .unwrap();
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("t.npz")]);

    // A target that is a directory makes the rename fail: the temp file must be gone.
    std::fs::create_dir(dir.join("d.npz")).unwrap();
    std::fs::write(dir.join("d.npz/keep"), b"x").unwrap();
    assert_eq!(
        saver
            .save(dir.join("d"), &SaveOptions::default())
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Io
    );
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        vec![
            std::ffi::OsString::from("d.npz"),
            std::ffi::OsString::from("t.npz")
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_adds_are_refused() {
    let mut saver = Saver::new();
    let data = [0u8; 8];
    assert_eq!(
        saver.add("", &data, Dtype::U8, &[8]).err().unwrap().kind(),
        ErrorKind::InvalidArg
    );
    assert_eq!(
        saver.add("a", &data, Dtype::U8, &[9]).err().unwrap().kind(),
        ErrorKind::InvalidArg
    );
    saver.add("a", &data, Dtype::U8, &[8]).unwrap();
    assert_eq!(
        saver.add("a", &data, Dtype::U8, &[8]).err().unwrap().kind(),
        ErrorKind::InvalidArg
    );
    let e = saver
        .add("b", &data, Dtype::F64, &[u64::MAX, 2])
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Overflow);
    let e = saver
        .add_descr("o", &data, "|O", &[1], false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::BadDtype);
    let e = saver
        .add_descr("q", &data, "<q9", &[1], false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::BadDtype);
    assert_eq!(saver.len(), 1);
}

#[test]
fn concurrent_saves_and_restores_are_exact() {
    let dir = scratch("threads");
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let dir = &dir;
            s.spawn(move || {
                for round in 0..10u64 {
                    let a = pattern(100_000 + (t * 1000 + round) as usize, t * 100 + round);
                    let b = pattern(5_000_000, t + round);
                    let mut saver = Saver::new();
                    saver.add("a", &a, Dtype::U8, &[a.len() as u64]).unwrap();
                    saver.add("b", &b, Dtype::U8, &[b.len() as u64]).unwrap();
                    let path = saver
                        .save(dir.join(format!("t{t}")), &SaveOptions::default())
                        .unwrap();
                    let r = restore(&path, &RestoreOptions::default()).unwrap();
                    assert_eq!(r.data(0).unwrap(), &a[..]);
                    assert_eq!(r.data(1).unwrap(), &b[..]);
                }
            });
        }
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn compressed_saves_are_valid_deflate_and_round_trip() {
    let dir = scratch("deflate");
    // Compressible and incompressible, small and multi-block.
    let smooth: Vec<u8> = (0..5_000_000u32)
        .flat_map(|i| ((i / 1000) as f32).to_ne_bytes())
        .collect();
    let noise = pattern(3_000_000, 9);
    let tiny = pattern(100, 10);
    let mut saver = Saver::new();
    saver
        .add("smooth", &smooth, Dtype::F32, &[5_000_000])
        .unwrap();
    saver.add("noise", &noise, Dtype::U8, &[3_000_000]).unwrap();
    saver.add("tiny", &tiny, Dtype::U8, &[100]).unwrap();
    saver.add("empty", &[], Dtype::F64, &[0]).unwrap();
    for level in [1, 6, 9] {
        let opts = SaveOptions::default().compression(level);
        let path = saver.save(dir.join(format!("c{level}")), &opts).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(
            size < (smooth.len() / 10 + noise.len() + 100_000) as u64,
            "level {level}: {size}"
        );
        let members = zip_members(&path); // read_to_end: inflates and checks each CRC
        assert_eq!(
            &members[0].1[members[0].1.len() - smooth.len()..],
            &smooth[..]
        );
        let mut z = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(
            z.by_index(0).unwrap().compression(),
            zip::CompressionMethod::Deflated
        );
        let a = restore(&path, &RestoreOptions::default()).unwrap();
        assert_eq!(a.data(0).unwrap(), &smooth[..]);
        assert_eq!(a.data(1).unwrap(), &noise[..]);
        assert_eq!(a.data(2).unwrap(), &tiny[..]);
        assert!(a.arrays()[0].compressed);
    }
    let bad = SaveOptions::default().compression(10);
    assert_eq!(
        saver.save(dir.join("bad"), &bad).err().unwrap().kind(),
        ErrorKind::InvalidArg
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn deflated_header_shorter_than_its_prefix_is_a_format_error() {
    // Found by cargo-fuzz: a deflated member whose .npy HEADER_LEN is 0 (12-byte payload).
    let hex = "504b030414000000080000002100a3db27630e0000000c00000005000000612e6e70799bec17ea1b10c9c8c0c090\
               980400504b01022d0314000000080000002100a3db27630e0000000c000000050000000000000000000000a48100\
               000000612e6e7079504b0506000000000100010033000000310000000000";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let e = psv::restore(&bytes, &RestoreOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Format, "{e}");
}

#[test]
fn two_members_claiming_one_key_are_a_format_error() {
    use std::io::Write;
    let dir = scratch("claims");
    let mut one = Saver::new();
    one.add("x", &[1, 2, 3], Dtype::U8, &[3]).unwrap();
    let one_path = one.save(dir.join("one"), &SaveOptions::default()).unwrap();
    let npy = zip_members(&one_path).remove(0).1;
    // (names, the key both claim); a third case with no clash must restore.
    for (names, clash) in [
        (&["x.npy", "x"][..], Some("x")),
        (&["x", "y.npy", "x.npy"][..], Some("x")),
        (&["y.npy.npy", "y.npy"][..], Some("y.npy")),
        (&["y.npy.npy", "z.npy", "y"][..], None),
    ] {
        let path = dir.join("pair.npz");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for name in names {
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            z.start_file(*name, stored).unwrap();
            z.write_all(&npy).unwrap();
        }
        z.finish().unwrap();
        match clash {
            Some(key) => {
                let e = restore(&path, &RestoreOptions::default()).err().unwrap();
                assert_eq!(e.kind(), ErrorKind::Format, "{names:?}: {e}");
                assert!(
                    e.message().contains(&format!("claim the key {key:?}")),
                    "{e}"
                );
            }
            None => {
                let a = restore(&path, &RestoreOptions::default()).unwrap();
                let keys: Vec<&str> = a.arrays().iter().map(|x| x.key.as_str()).collect();
                assert_eq!(keys, ["y.npy", "z"]);
                assert_eq!(a.data(0), Some(&[1u8, 2, 3][..]));
            }
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
