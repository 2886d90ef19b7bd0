//! The image block of a restore: a psv-written file (every array stored, data 64-aligned) is
//! restored into a block that mirrors the file's data region, each array at its own file offset
//! minus one common start. These tests check that the image is really used, that every byte
//! and CRC is still checked, and that arrays which do not fit it land after the image.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use psv::{
    restore, restore_with_progress, Archive, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver,
};

use common::pattern;

fn scratch(name: &str) -> PathBuf {
    common::scratch("image", name)
}

/// `file offset - block offset` of every array (stored members only).
fn image_starts(a: &Archive) -> Vec<i64> {
    a.arrays()
        .iter()
        .map(|x| x.file_offset.unwrap() as i64 - x.offset as i64)
        .collect()
}

/// 300 small arrays of mixed types (one big-endian), a 0-d and an empty one, and a 3 MiB one.
fn save_mixed(dir: &Path) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let mut arrays: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("small_{i}"), pattern(8 * (1 + i % 37), i as u64)))
        .collect();
    arrays.push(("big".into(), pattern(3 << 20, 999)));
    arrays.push(("scalar".into(), pattern(8, 5)));
    arrays.push(("empty".into(), Vec::new()));
    let mut saver = Saver::new();
    for (i, (k, v)) in arrays.iter().enumerate() {
        match k.as_str() {
            "scalar" => saver.add(k, v, Dtype::F64, &[]).unwrap(),
            "empty" => saver.add(k, v, Dtype::F32, &[0, 3]).unwrap(),
            _ if i == 7 => saver
                .add_descr(k, v, ">f8", &[v.len() as u64 / 8], false)
                .unwrap(),
            _ => saver.add(k, v, Dtype::U8, &[v.len() as u64]).unwrap(),
        }
    }
    let path = saver
        .save(dir.join("mixed"), &SaveOptions::default())
        .unwrap();
    (path, arrays)
}

#[test]
fn psv_files_restore_as_an_image_of_the_file() {
    let dir = scratch("mixed");
    let (path, arrays) = save_mixed(&dir);
    let a = restore(&path, &RestoreOptions::default()).unwrap();
    assert_eq!(a.len(), arrays.len());
    for (i, (k, v)) in arrays.iter().enumerate() {
        assert_eq!(&a.arrays()[i].key, k);
        assert_eq!(a.data(i).unwrap(), &v[..], "{k}");
        assert_eq!(a.data_ptr(i).unwrap() as usize % 64, 0, "{k}");
    }
    // One common start: the image layout (the packed layout puts the arrays back to back, so
    // their file offsets and block offsets drift apart with every header).
    let starts = image_starts(&a);
    assert!(starts.iter().all(|&s| s == starts[0]), "{starts:?}");
    assert_eq!(starts[0] % 64, 0);
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert!((a.block().len() as u64) < file_len);

    // Selecting keys, or opting out of the image by limit, uses the packed layout: same bytes.
    let keys: Vec<String> = arrays.iter().map(|(k, _)| k.clone()).collect();
    let packed = restore(&path, &RestoreOptions::default().keys(keys)).unwrap();
    let starts = image_starts(&packed);
    assert!(starts.iter().any(|&s| s != starts[0]));
    for (i, (_, v)) in arrays.iter().enumerate() {
        assert_eq!(packed.data(i).unwrap(), &v[..]);
    }
    assert!(packed.block().len() < a.block().len());
    let payload: usize = arrays.iter().map(|(_, v)| v.len().div_ceil(64) * 64).sum();
    let tight = restore(
        &path,
        &RestoreOptions::default().max_total_bytes(Some(payload as u64)),
    )
    .unwrap();
    assert_eq!(tight.block().len(), payload);

    // Native byte order: the big-endian array is swapped in place in the image.
    let native = restore(&path, &RestoreOptions::default().native_endian(true)).unwrap();
    let swapped: Vec<u8> = arrays[7]
        .1
        .chunks(8)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    assert_eq!(native.data(7).unwrap(), &swapped[..]);
    assert_eq!(native.data(8).unwrap(), &arrays[8].1[..]);
    let starts = image_starts(&native);
    assert!(starts.iter().all(|&s| s == starts[0]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_flipped_bit_in_a_small_member_is_a_crc_error() {
    let dir = scratch("flip");
    let (path, arrays) = save_mixed(&dir);
    let good = std::fs::read(&path).unwrap();
    let a = restore(&path, &RestoreOptions::default()).unwrap();
    // In the data of small_5, of the last small array, and of the big array.
    let data = a.arrays()[5].file_offset.unwrap() as usize;
    let last = a.arrays()[299].file_offset.unwrap() as usize;
    let big = a.arrays()[300].file_offset.unwrap() as usize;
    for (at, member) in [
        (data + 3, "small_5.npy"),
        (last, "small_299.npy"),
        (big + (2 << 20), "big.npy"),
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let e = restore(&path, &RestoreOptions::default()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Crc, "flip at {at}: {e}");
        assert!(e.message().contains(member), "{e}");
        let unchecked = RestoreOptions::default().verify_crc(false);
        restore(&path, &unchecked).unwrap();
    }
    // A truncated file is a format error, not a crash, wherever it is cut.
    for cut in [100, data, big + 10, good.len() - 30] {
        std::fs::write(&path, &good[..cut]).unwrap();
        let e = restore(&path, &RestoreOptions::default()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Format, "cut at {cut}: {e}");
    }
    assert_eq!(arrays.len(), 303);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unaligned_member_appended_later_lands_after_the_image() {
    let dir = scratch("append");
    let x = pattern(4096, 1);
    let big = pattern(200 << 10, 2);
    let mut saver = Saver::new();
    saver.add("x", &x, Dtype::U8, &[4096]).unwrap();
    saver.add("big", &big, Dtype::U8, &[200 << 10]).unwrap();
    let path = saver.save(dir.join("a"), &SaveOptions::default()).unwrap();
    // The .npy bytes of a third array, appended by another ZIP writer (no alignment).
    let extra = pattern(3000, 3);
    let mut one = Saver::new();
    one.add("c", &extra, Dtype::U8, &[3000]).unwrap();
    let one_path = one.save(dir.join("one"), &SaveOptions::default()).unwrap();
    let mut npy = Vec::new();
    zip::ZipArchive::new(std::fs::File::open(&one_path).unwrap())
        .unwrap()
        .by_name("c.npy")
        .unwrap()
        .read_to_end(&mut npy)
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut z = zip::ZipWriter::new_append(file).unwrap();
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("c_appended.npy", stored).unwrap();
    z.write_all(&npy).unwrap();
    z.finish().unwrap();

    let a = restore(&path, &RestoreOptions::default()).unwrap();
    let keys: Vec<&str> = a.arrays().iter().map(|x| x.key.as_str()).collect();
    assert_eq!(keys, ["x", "big", "c_appended"]);
    assert_eq!(a.data(0).unwrap(), &x[..]);
    assert_eq!(a.data(1).unwrap(), &big[..]);
    assert_eq!(a.data(2).unwrap(), &extra[..]);
    let starts = image_starts(&a);
    assert_eq!(starts[0], starts[1], "x and big are in the image");
    let c = &a.arrays()[2];
    assert_ne!(
        c.file_offset.unwrap() % 64,
        0,
        "the appended data is unaligned"
    );
    assert_eq!(c.offset % 64, 0);
    assert!(c.offset as u64 >= c.file_offset.unwrap() - starts[0] as u64);
    assert_eq!(a.data_ptr(2).unwrap() as usize % 64, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn progress_counts_the_arrays_read_in_place() {
    let dir = scratch("progress");
    let (path, arrays) = save_mixed(&dir);
    let total_bytes: u64 = arrays.iter().map(|(_, v)| v.len() as u64).sum();
    let mut calls: Vec<(u64, u64)> = Vec::new();
    let a = restore_with_progress(&path, &RestoreOptions::default(), &mut |done, total| {
        calls.push((done, total));
        true
    })
    .unwrap();
    assert_eq!(a.len(), arrays.len());
    let &(done, total) = calls.last().unwrap();
    assert_eq!((done, total), (total_bytes, total_bytes), "{calls:?}");
    assert!(calls
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 == w[1].1));
    std::fs::remove_dir_all(dir).unwrap();
}
