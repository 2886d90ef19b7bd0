//! The directory container (`Layout::Dir`): one `.npy` per array committed by an index file.

mod common;

use std::path::PathBuf;

use psv::Layout;
use psv::{restore, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver};

fn scratch(name: &str) -> PathBuf {
    common::scratch("dir", name)
}

fn dir_opts() -> SaveOptions {
    SaveOptions::default().layout(Layout::Dir)
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn saves_one_npy_per_array_and_restores_them() {
    let root = scratch("basic");
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 253) as u8).collect();
    let small = [1u8, 2, 3];
    let mut saver = Saver::new();
    saver.add("big", &big, Dtype::U8, &[20_000_000]).unwrap();
    saver.add("small one", &small, Dtype::U8, &[3]).unwrap();
    let dir = root.join("arrays");
    assert_eq!(saver.save(&dir, &dir_opts()).unwrap(), dir);
    assert_eq!(listing(&dir), ["big.npy", "psv-index.txt", "small one.npy"]);
    let file = std::fs::read(dir.join("big.npy")).unwrap();
    let header_len = file.len() - big.len();
    assert_eq!(header_len % 64, 0, "array data is 64-aligned in each file");
    assert_eq!(&file[header_len..], &big[..]);
    let a = restore(&dir, &RestoreOptions::default()).unwrap();
    assert_eq!(a.data(a.find("big").unwrap()).unwrap(), &big[..]);
    assert_eq!(a.data(a.find("small one").unwrap()).unwrap(), &small);
    assert_eq!(a.data_ptr(1).unwrap() as usize % 64, 0);
    let only = RestoreOptions::default().keys(["small one"]);
    assert_eq!(restore(&dir, &only).unwrap().len(), 1);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_second_save_commits_by_index_and_collects_garbage() {
    let root = scratch("resave");
    let dir = root.join("d");
    let (v1, v2) = ([1u8; 100], [2u8; 200]);
    let mut first = Saver::new();
    first.add("x", &v1, Dtype::U8, &[100]).unwrap();
    first.add("gone", &v1, Dtype::U8, &[100]).unwrap();
    first.save(&dir, &dir_opts()).unwrap();
    let mut second = Saver::new();
    second.add("x", &v2, Dtype::U8, &[200]).unwrap();
    // Cancelling before the commit leaves the first version whole and no new files behind.
    let e = second
        .save_with_progress(&dir, &dir_opts(), &mut |_, _| false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert_eq!(listing(&dir), ["gone.npy", "psv-index.txt", "x.npy"]);
    assert_eq!(
        restore(&dir, &RestoreOptions::default())
            .unwrap()
            .data(0)
            .unwrap(),
        &v1
    );
    // Committing: x is written beside the old x.npy (which the old index still names), then the
    // index switches and the files only the old index named are removed.
    second.save(&dir, &dir_opts()).unwrap();
    assert_eq!(listing(&dir), ["psv-index.txt", "x.1.npy"]);
    let a = restore(&dir, &RestoreOptions::default()).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a.data(0).unwrap(), &v2);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn unsafe_keys_and_damaged_files_are_errors() {
    let root = scratch("errors");
    let data = [0u8; 8];
    for key in ["a/b", "..", ".hidden", "line\nbreak"] {
        let mut saver = Saver::new();
        saver.add(key, &data, Dtype::U8, &[8]).unwrap();
        let e = saver.save(root.join("bad"), &dir_opts()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArg, "{key:?}");
    }
    let compressed = dir_opts().compression(6);
    let mut saver = Saver::new();
    saver.add("k", &data, Dtype::U8, &[8]).unwrap();
    assert_eq!(
        saver
            .save(root.join("c"), &compressed)
            .err()
            .unwrap()
            .kind(),
        ErrorKind::InvalidArg
    );

    let dir = root.join("ok");
    saver.save(&dir, &dir_opts()).unwrap();
    let path = dir.join("k.npy");
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert_eq!(
        restore(&dir, &RestoreOptions::default())
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Crc
    );
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert_eq!(
        restore(&dir, &RestoreOptions::default())
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Format
    );
    std::fs::remove_file(dir.join("psv-index.txt")).unwrap();
    assert_eq!(
        restore(&dir, &RestoreOptions::default())
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Format
    );
    std::fs::remove_dir_all(root).unwrap();
}

/// The index's lines: (crc32, size, file, key).
fn index_lines(dir: &std::path::Path) -> Vec<(u32, u64, String, String)> {
    let text = std::fs::read_to_string(dir.join("psv-index.txt")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("psv-dir 1"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            (
                u32::from_str_radix(f[0], 16).unwrap(),
                f[1].parse().unwrap(),
                f[2].to_owned(),
                f[3].to_owned(),
            )
        })
        .collect()
}

#[test]
fn large_files_written_in_pieces_by_every_worker_are_whole_and_their_crcs_right() {
    // Large arrays (one piece, several pieces, a piece boundary inside the data) between small
    // ones: the workers write pieces of the large files while small files are created, and the
    // last piece of each file gives it its name.
    let root = scratch("pieces");
    let sizes = [
        (65 << 10) + 3,
        5,
        (5 << 20) + 7,
        0,
        (2 << 20) - 128,
        64 << 10,
        (9 << 20) + 1,
        100,
    ];
    let data: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|k| (k * 7 + i * 13 + k / 4093) as u8).collect())
        .collect();
    let dir = root.join("d");
    for (round, threads) in [(0, 2), (1, 1), (2, 3)] {
        let mut saver = Saver::new();
        for (i, d) in data.iter().enumerate() {
            saver
                .add(&format!("a{i}"), d, Dtype::U8, &[d.len() as u64])
                .unwrap();
        }
        saver
            .save(&dir, &dir_opts().threads(threads).fsync(round == 1))
            .unwrap();
        let index = index_lines(&dir);
        assert_eq!(index.len(), data.len());
        for (i, (crc, size, file, key)) in index.iter().enumerate() {
            assert_eq!(key, &format!("a{i}"));
            let bytes = std::fs::read(dir.join(file)).unwrap();
            assert_eq!(bytes.len() as u64, *size, "{file}: the index's size");
            assert_eq!(crc32fast::hash(&bytes), *crc, "{file}: the index's CRC");
            let header_len = bytes.len() - data[i].len();
            assert_eq!(header_len % 64, 0);
            assert!(bytes[header_len..] == data[i][..], "{file}: round {round}");
        }
        // Old files are gone; names alternate between saves, nothing else is left.
        let mut want: Vec<String> = index.iter().map(|l| l.2.clone()).collect();
        want.push("psv-index.txt".into());
        want.sort();
        assert_eq!(listing(&dir), want, "round {round}");
        let a = restore(&dir, &RestoreOptions::default()).unwrap();
        for (i, d) in data.iter().enumerate() {
            assert!(a.data(a.find(&format!("a{i}")).unwrap()).unwrap() == &d[..]);
        }
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_cancelled_save_of_large_files_leaves_the_old_version_and_no_files_behind() {
    // Cancelled at the commit, after the workers wrote and placed every large file: they are
    // removed again. (tests/python/test_keep.py fails a large file's writes with EFBIG.)
    let root = scratch("pieces-fail");
    let dir = root.join("d");
    let big = vec![3u8; (3 << 20) + 5];
    let mut first = Saver::new();
    first
        .add("big", &big, Dtype::U8, &[big.len() as u64])
        .unwrap();
    first.save(&dir, &dir_opts()).unwrap();
    let before = listing(&dir);
    // Cancelled at the commit: every large file was written and placed, then removed again.
    let big2 = vec![4u8; (5 << 20) + 1];
    let mut second = Saver::new();
    second
        .add("big", &big2, Dtype::U8, &[big2.len() as u64])
        .unwrap();
    second
        .add("other", &big2, Dtype::U8, &[big2.len() as u64])
        .unwrap();
    let e = second
        .save_with_progress(&dir, &dir_opts(), &mut |_, _| false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert_eq!(listing(&dir), before);
    let a = restore(&dir, &RestoreOptions::default()).unwrap();
    assert!(a.data(0).unwrap() == &big[..]);
    std::fs::remove_dir_all(root).unwrap();
}
