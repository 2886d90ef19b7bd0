//! The collective save run in one process (each "rank" a Saver and a Collective; the blobs
//! passed by hand, as a host's allgather would): the file is byte-identical to a single save of
//! the same arrays in the same global order; and its errors (duplicate keys across ranks, blobs
//! in another order, arrays changed since the manifest, abort). The same flow under mpirun is
//! tests/mpi/.

mod common;

use std::path::{Path, PathBuf};

use psv::{restore, Collective, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver};

use common::pattern;

fn scratch(name: &str) -> PathBuf {
    common::scratch("collective", name)
}

/// Per rank, its arrays: (key, bytes). Sizes per rank are given in bytes (u8 arrays).
fn arrays(sizes: &[Vec<usize>]) -> Vec<Vec<(String, Vec<u8>)>> {
    sizes
        .iter()
        .enumerate()
        .map(|(r, sizes)| {
            sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (format!("r{r}/a{i}"), pattern(n, (r * 100 + i) as u64 + 1)))
                .collect()
        })
        .collect()
}

fn saver(arrays: &[(String, Vec<u8>)]) -> Saver<'_> {
    let mut s = Saver::new();
    for (k, d) in arrays {
        s.add(k, d, Dtype::U8, &[d.len() as u64]).unwrap();
    }
    s
}

/// Runs the whole flow for every rank in this process; returns the target.
fn collective_save(ranks: &[Vec<(String, Vec<u8>)>], path: &Path, opts: &SaveOptions) -> PathBuf {
    let savers: Vec<Saver<'_>> = ranks.iter().map(|a| saver(a)).collect();
    let manifests: Vec<Vec<u8>> = savers.iter().map(|s| s.manifest().unwrap()).collect();
    let blobs: Vec<&[u8]> = manifests.iter().map(Vec::as_slice).collect();
    let mut cs: Vec<Collective> = (0..ranks.len())
        .map(|r| Collective::new(path, &blobs, r, opts).unwrap())
        .collect();
    assert!(cs.iter().all(|c| c.plan_id() == cs[0].plan_id()));
    cs[0].create().unwrap();
    // Ranks write in reverse order: who writes first does not matter.
    let mut reports: Vec<Vec<u8>> = (0..ranks.len())
        .rev()
        .map(|r| cs[r].write(&savers[r], None).unwrap())
        .collect();
    reports.reverse();
    let refs: Vec<&[u8]> = reports.iter().map(Vec::as_slice).collect();
    let target = cs[0].commit(&refs).unwrap();
    assert!(!cs[0].temp_path().exists());
    target
}

fn single_save(ranks: &[Vec<(String, Vec<u8>)>], path: &Path, opts: &SaveOptions) -> Vec<u8> {
    let all: Vec<(String, Vec<u8>)> = ranks.iter().flatten().cloned().collect();
    let p = saver(&all).save(path, opts).unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn the_collective_file_is_the_single_save_for_1_to_4_ranks() {
    let dir = scratch("identity");
    let big = (4 << 20) + 77;
    let cases: Vec<Vec<Vec<usize>>> = vec![
        vec![vec![10, big, 0, 3]],
        vec![vec![big], vec![1, 2, 3, 70_000, 5]],
        vec![vec![7; 20], vec![], vec![big, 64, (1 << 20) + 1]],
        vec![vec![1], vec![big, 9], vec![], vec![100_000, 13, 2 << 20]],
    ];
    for (k, sizes) in cases.iter().enumerate() {
        for align in [64u64, 4096, 1 << 20] {
            let opts = SaveOptions::default().alignment(align);
            let ranks = arrays(sizes);
            let got = collective_save(&ranks, &dir.join(format!("c{k}_{align}")), &opts);
            let want = single_save(&ranks, &dir.join(format!("s{k}_{align}")), &opts);
            assert!(
                std::fs::read(&got).unwrap() == want,
                "{} ranks, {align}",
                sizes.len()
            );
            let a = restore(&got, &RestoreOptions::default()).unwrap();
            for (key, data) in ranks.iter().flatten() {
                assert_eq!(a.data(a.find(key).unwrap()).unwrap(), &data[..], "{key}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_rank_without_arrays_still_makes_an_empty_archive() {
    let dir = scratch("empty");
    let ranks = arrays(&[vec![], vec![]]);
    let opts = SaveOptions::default();
    let got = collective_save(&ranks, &dir.join("e"), &opts);
    assert_eq!(
        std::fs::read(&got).unwrap(),
        single_save(&ranks, &dir.join("s"), &opts)
    );
    assert_eq!(std::fs::read(&got).unwrap().len(), 22);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_key_on_two_ranks_is_an_error_on_every_rank_naming_both() {
    let a = [0u8; 4];
    let mut s0 = Saver::new();
    s0.add("x", &a, Dtype::U8, &[4]).unwrap();
    let mut s1 = Saver::new();
    s1.add("y", &a, Dtype::U8, &[4]).unwrap();
    let mut s2 = Saver::new();
    s2.add("x", &a, Dtype::U8, &[4]).unwrap();
    let m: Vec<Vec<u8>> = [&s0, &s1, &s2]
        .iter()
        .map(|s| s.manifest().unwrap())
        .collect();
    let blobs: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
    for r in 0..3 {
        let e = Collective::new("/nonexistent/x", &blobs, r, &SaveOptions::default())
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArg);
        assert!(e.message().contains("rank 0 and rank 2"), "{e}");
        assert!(e.message().contains("\"x\""), "{e}");
    }
}

#[test]
fn blobs_in_another_order_give_another_plan_id() {
    let ranks = arrays(&[vec![5, 6], vec![7], vec![8, 9]]);
    let savers: Vec<Saver<'_>> = ranks.iter().map(|a| saver(a)).collect();
    let m: Vec<Vec<u8>> = savers.iter().map(|s| s.manifest().unwrap()).collect();
    let opts = SaveOptions::default();
    let id = |order: [usize; 3], r: usize| {
        let blobs: Vec<&[u8]> = order.iter().map(|&i| m[i].as_slice()).collect();
        Collective::new("x", &blobs, r, &opts).unwrap().plan_id()
    };
    assert_eq!(id([0, 1, 2], 0), id([0, 1, 2], 2));
    assert_ne!(id([0, 1, 2], 0), id([0, 2, 1], 0));
    assert_ne!(id([0, 1, 2], 0), id([1, 0, 2], 1));
    // The alignment changes the bytes, so it changes the id; the thread count does not.
    let blobs: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
    let with = |o: &SaveOptions| Collective::new("x", &blobs, 0, o).unwrap().plan_id();
    assert_ne!(with(&opts), with(&SaveOptions::default().alignment(4096)));
    assert_eq!(with(&opts), with(&SaveOptions::default().threads(1)));
    // A report from another plan is refused at commit.
    let dir = scratch("order");
    let mut c = Collective::new(dir.join("o"), &blobs, 0, &opts).unwrap();
    let swapped: Vec<&[u8]> = [0, 2, 1].iter().map(|&i| m[i].as_slice()).collect();
    let mut other = Collective::new(dir.join("o"), &swapped, 0, &opts).unwrap();
    c.create().unwrap();
    let mine = c.write(&savers[0], None).unwrap();
    // The other plan's temporary file has another name: its rank cannot write into this one.
    assert_ne!(other.temp_path(), c.temp_path());
    let e = other.write(&savers[0], None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    let foreign = psv_report_of_other_plan(&mine);
    let e = c.commit(&[&foreign, &mine, &mine]).unwrap_err();
    assert!(e.message().contains("another plan"), "{e}");
    let e = c.commit(&[&mine, &mine, &mine]).unwrap_err();
    assert!(e.message().contains("CRC report 1"), "{e}");
    c.abort().unwrap();
    assert!(!c.temp_path().exists());
    assert!(!dir.join("o.npz").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of a CRC report with its plan id changed.
fn psv_report_of_other_plan(report: &[u8]) -> Vec<u8> {
    let mut r = report.to_vec();
    r[16] ^= 1; // the plan id starts after magic, version and rank
    r
}

#[test]
fn arrays_changed_since_the_manifest_are_invalid_arg_and_nothing_is_written() {
    let dir = scratch("changed");
    let a = pattern(64, 1);
    let mut s = Saver::new();
    s.add("w", &a, Dtype::F32, &[16]).unwrap();
    let m = s.manifest().unwrap();
    let mut c = Collective::new(dir.join("c"), &[&m], 0, &SaveOptions::default()).unwrap();
    c.create().unwrap();
    let before = std::fs::read(c.temp_path()).unwrap();
    for changed in [
        {
            let mut t = Saver::new();
            t.add("w", &a, Dtype::F32, &[4, 4]).unwrap();
            t
        },
        {
            let mut t = Saver::new();
            t.add("w", &a, Dtype::I32, &[16]).unwrap();
            t
        },
        {
            let mut t = Saver::new();
            t.add("v", &a, Dtype::F32, &[16]).unwrap();
            t
        },
        Saver::new(),
    ] {
        let e = c.write(&changed, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArg, "{e}");
    }
    assert_eq!(std::fs::read(c.temp_path()).unwrap(), before);
    // The unchanged saver still writes; abort removes the file; nothing after abort works.
    c.write(&s, None).unwrap();
    c.abort().unwrap();
    assert!(!c.temp_path().exists());
    assert_eq!(c.write(&s, None).unwrap_err().kind(), ErrorKind::InvalidArg);
    assert_eq!(c.commit(&[]).unwrap_err().kind(), ErrorKind::InvalidArg);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rank_roles_and_order_of_calls_are_checked() {
    let dir = scratch("roles");
    let ranks = arrays(&[vec![10], vec![20]]);
    let savers: Vec<Saver<'_>> = ranks.iter().map(|a| saver(a)).collect();
    let m: Vec<Vec<u8>> = savers.iter().map(|s| s.manifest().unwrap()).collect();
    let blobs: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
    let opts = SaveOptions::default();
    let path = dir.join("t");
    std::fs::write(dir.join("t.npz"), b"old").unwrap();
    let mut c0 = Collective::new(&path, &blobs, 0, &opts).unwrap();
    let mut c1 = Collective::new(&path, &blobs, 1, &opts).unwrap();
    assert_eq!(c0.temp_path(), c1.temp_path());
    // Rank 1 writes before the file exists: Io, naming the order.
    let e = c1.write(&savers[1], None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(c1.create().unwrap_err().kind(), ErrorKind::InvalidArg);
    assert_eq!(c1.commit(&[]).unwrap_err().kind(), ErrorKind::InvalidArg);
    assert_eq!(c0.commit(&[]).unwrap_err().kind(), ErrorKind::InvalidArg);
    // A leftover of a killed save of the same plan is replaced by create.
    std::fs::write(c0.temp_path(), b"leftover").unwrap();
    c0.create().unwrap();
    assert_eq!(c0.create().unwrap_err().kind(), ErrorKind::InvalidArg);
    let r1 = c1.write(&savers[1], None).unwrap();
    let r0 = c0.write(&savers[0], None).unwrap();
    assert_eq!(c0.commit(&[&r0]).unwrap_err().kind(), ErrorKind::InvalidArg);
    assert_eq!(
        c0.commit(&[&r0, &r1[..r1.len() - 1]]).unwrap_err().kind(),
        ErrorKind::Format
    );
    // Nothing reached the target so far.
    assert_eq!(std::fs::read(dir.join("t.npz")).unwrap(), b"old");
    c0.commit(&[&r0, &r1]).unwrap();
    assert_eq!(
        std::fs::read(dir.join("t.npz")).unwrap(),
        single_save(&ranks, &dir.join("s"), &opts)
    );
    c0.abort().unwrap(); // after commit: nothing to do
    assert!(dir.join("t.npz").exists());
    // Bad arguments.
    assert_eq!(
        Collective::new(&path, &blobs, 2, &opts)
            .err()
            .unwrap()
            .kind(),
        ErrorKind::InvalidArg
    );
    assert_eq!(
        Collective::new(&path, &[], 0, &opts).err().unwrap().kind(),
        ErrorKind::InvalidArg
    );
    let z = SaveOptions::default().compression(1);
    assert_eq!(
        Collective::new(&path, &blobs, 0, &z).err().unwrap().kind(),
        ErrorKind::InvalidArg
    );
    let e = Collective::new(&path, &[&m[0], b"garbage"], 0, &opts)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(e.message().contains("rank 1"), "{e}");
    // Dropping rank 0's handle before commit removes the file.
    let mut c = Collective::new(dir.join("d"), &blobs, 0, &opts).unwrap();
    c.create().unwrap();
    let temp = c.temp_path().to_path_buf();
    assert!(temp.exists());
    drop(c);
    assert!(!temp.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
