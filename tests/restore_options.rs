//! Restore options and progress: selected keys, metadata-only, native byte order, mmap mode,
//! restore from memory, progress reports and cancellation.

mod common;

use std::path::PathBuf;

use psv::{restore, restore_with_progress, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver};

fn scratch(name: &str) -> PathBuf {
    common::scratch("opt", name)
}

fn sample(dir: &std::path::Path) -> (PathBuf, Vec<Vec<u8>>) {
    let arrays: Vec<Vec<u8>> = (0..4u8)
        .map(|k| {
            (0..(k as usize + 1) * 3_000_000)
                .map(|i| (i as u8).wrapping_mul(k + 1))
                .collect()
        })
        .collect();
    let mut saver = Saver::new();
    for (k, a) in arrays.iter().enumerate() {
        saver
            .add(&format!("a{k}"), a, Dtype::U8, &[a.len() as u64])
            .unwrap();
    }
    let be: Vec<u8> = [1.5f64, -2.25, 1e300]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    saver.add_descr("be", &be, ">f8", &[3], false).unwrap();
    let bec: Vec<u8> = [(1.0f32, 2.0f32)]
        .iter()
        .flat_map(|(r, i)| [r.to_be_bytes(), i.to_be_bytes()].concat())
        .collect();
    saver.add_descr("bec", &bec, ">c8", &[1], false).unwrap();
    let path = saver.save(dir.join("s"), &SaveOptions::default()).unwrap();
    (path, arrays)
}

#[test]
fn selected_keys_in_the_requested_order() {
    let dir = scratch("keys");
    let (path, arrays) = sample(&dir);
    let opts = RestoreOptions::default().keys(["a3", "a1"]);
    let a = restore(&path, &opts).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a.arrays()[0].key, "a3");
    assert_eq!(a.data(0).unwrap(), &arrays[3][..]);
    assert_eq!(a.data(1).unwrap(), &arrays[1][..]);
    assert!(a.block().len() < arrays[3].len() + arrays[1].len() + 128);
    let missing = RestoreOptions::default().keys(["nope"]);
    assert_eq!(
        restore(&path, &missing).err().unwrap().kind(),
        ErrorKind::NotFound
    );
    let twice = RestoreOptions::default().keys(["a1", "a1"]);
    assert_eq!(
        restore(&path, &twice).err().unwrap().kind(),
        ErrorKind::InvalidArg
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn metadata_only_reads_no_data() {
    let dir = scratch("meta");
    let (path, arrays) = sample(&dir);
    let opts = RestoreOptions::default().metadata_only(true);
    let a = restore(&path, &opts).unwrap();
    assert_eq!(a.len(), 6);
    assert!(a.is_metadata_only());
    assert!(a.data(0).is_none() && a.data_ptr(0).is_none());
    assert_eq!(a.block().len(), 0);
    assert_eq!(a.arrays()[2].nbytes, arrays[2].len());
    assert_eq!(a.arrays()[4].descr_string, ">f8");
    assert_eq!(a.arrays()[4].file_offset.unwrap() % 64, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn native_endian_swaps_in_place() {
    let dir = scratch("endian");
    let (path, _) = sample(&dir);
    let kept = restore(&path, &RestoreOptions::default()).unwrap();
    let be = kept.find("be").unwrap();
    assert_eq!(kept.arrays()[be].descr_string, ">f8");
    assert_eq!(
        kept.arrays()[be].dtype,
        None.or(cfg!(target_endian = "big").then_some(Dtype::F64))
    );
    let opts = RestoreOptions::default().native_endian(true);
    let a = restore(&path, &opts).unwrap();
    let i = a.find("be").unwrap();
    assert_eq!(a.arrays()[i].dtype, Some(Dtype::F64));
    let vals: Vec<f64> = a
        .data(i)
        .unwrap()
        .chunks(8)
        .map(|c| f64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(vals, vec![1.5, -2.25, 1e300]);
    let c = a.find("bec").unwrap();
    assert_eq!(a.arrays()[c].dtype, Some(Dtype::C64));
    let d = a.data(c).unwrap();
    assert_eq!(f32::from_ne_bytes(d[..4].try_into().unwrap()), 1.0);
    assert_eq!(f32::from_ne_bytes(d[4..].try_into().unwrap()), 2.0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mmap_mode_points_into_the_file_and_survives_replacement() {
    let dir = scratch("mmap");
    let (path, arrays) = sample(&dir);
    let opts = RestoreOptions::default().mmap(true);
    let a = restore(&path, &opts).unwrap();
    let map = a.mapping().unwrap();
    for (k, arr) in arrays.iter().enumerate() {
        let info = &a.arrays()[k];
        assert!(info.mapped);
        assert_eq!(a.data(k).unwrap(), &arr[..]);
        let p = a.data_ptr(k).unwrap() as usize;
        assert_eq!(p % 64, 0);
        assert!(p >= map.as_ptr() as usize && p + arr.len() <= map.as_ptr() as usize + map.len());
    }
    assert_eq!(
        a.block().len(),
        0,
        "nothing is copied for an all-aligned psv file"
    );
    // Replace the file by a rename (as every psv save does): the mapping keeps the old bytes.
    let mut other = Saver::new();
    other.add("a0", &[9u8; 10], Dtype::U8, &[10]).unwrap();
    other.save(&path, &SaveOptions::default()).unwrap();
    assert_eq!(a.data(0).unwrap(), &arrays[0][..]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn memory_restore_matches_file_restore() {
    let dir = scratch("memory");
    let (path, arrays) = sample(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let a = restore(&bytes, &RestoreOptions::default()).unwrap();
    for (k, arr) in arrays.iter().enumerate() {
        assert_eq!(a.data(k).unwrap(), &arr[..]);
    }
    let e = restore(&bytes[..bytes.len() / 2], &RestoreOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Format);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn progress_reports_reach_the_total_and_cancel_cleanly() {
    let dir = scratch("progress");
    let big: Vec<u8> = (0..200_000_000u32).map(|i| i as u8).collect();
    let mut saver = Saver::new();
    saver
        .add("big", &big, Dtype::U8, &[big.len() as u64])
        .unwrap();
    let caller = std::thread::current().id();
    let mut calls = Vec::new();
    let path = saver
        .save_with_progress(
            dir.join("p"),
            &SaveOptions::default(),
            &mut |done, total| {
                assert_eq!(
                    std::thread::current().id(),
                    caller,
                    "callback on the calling thread"
                );
                calls.push((done, total));
                true
            },
        )
        .unwrap();
    let (last_done, total) = *calls.last().unwrap();
    assert_eq!(last_done, total);
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));

    // Cancel a save over an existing file: the old file stays, no temp file is left.
    let before = std::fs::read(&path).unwrap();
    let mut other = Saver::new();
    other
        .add("x", &big[..50_000_000], Dtype::U8, &[50_000_000])
        .unwrap();
    let e = other
        .save_with_progress(&path, &SaveOptions::default(), &mut |_, _| false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    let mut seen = 0u64;
    let a = restore_with_progress(&path, &RestoreOptions::default(), &mut |done, _| {
        seen = done;
        true
    })
    .unwrap();
    assert_eq!(seen, big.len() as u64);
    assert_eq!(a.data(0).unwrap(), &big[..]);
    let e = restore_with_progress(&path, &RestoreOptions::default(), &mut |_, _| false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Aborted);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mmap_with_native_endian_copies_the_members_it_must_swap() {
    let dir = scratch("mmap-endian");
    let (path, arrays) = sample(&dir);
    let opts = RestoreOptions::default().mmap(true).native_endian(true);
    let a = restore(&path, &opts).unwrap();
    assert!(a.arrays()[0].mapped, "native-order members stay mapped");
    assert_eq!(a.data(0).unwrap(), &arrays[0][..]);
    let i = a.find("be").unwrap();
    assert!(
        !a.arrays()[i].mapped,
        "members that need swapping are copied"
    );
    let vals: Vec<f64> = a
        .data(i)
        .unwrap()
        .chunks(8)
        .map(|c| f64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(vals, vec![1.5, -2.25, 1e300]);
    std::fs::remove_dir_all(dir).unwrap();
}
