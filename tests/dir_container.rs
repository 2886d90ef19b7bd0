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
