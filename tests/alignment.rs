//! The alignment option: every destination gives the path save's bytes, large arrays' data
//! starts at a multiple of the alignment in the file, small ones at 64; the zip crate and our
//! restore read it (mmap mode maps the large arrays in place, at aligned addresses). numpy's
//! side is tests/python/test_alignment.py.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};

use psv::{restore, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver};

use common::pattern;

fn arrays() -> Vec<(String, Vec<u8>)> {
    [5usize, 4096, 100_000, 0, (1 << 20) + 8, 3, 70_000, 3 << 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("a{i}"), pattern(n, i as u64 + 9)))
        .collect()
}

fn saver(arrays: &[(String, Vec<u8>)]) -> Saver<'_> {
    let mut s = Saver::new();
    for (k, d) in arrays {
        s.add(k, d, Dtype::U8, &[d.len() as u64]).unwrap();
    }
    s
}

#[test]
fn every_destination_gives_the_same_aligned_bytes() {
    let dir = common::scratch("align", "dest");
    let arrays = arrays();
    let s = saver(&arrays);
    for align in [64u64, 4096, 1 << 16, 1 << 20] {
        let opts = SaveOptions::default().alignment(align);
        let path = s.save(dir.join(format!("a{align}")), &opts).unwrap();
        let want = std::fs::read(&path).unwrap();
        assert_eq!(s.size(&opts).unwrap(), want.len() as u64);
        assert_eq!(s.to_vec(&opts).unwrap(), want, "to_vec {align}");
        let mut buf = vec![0xAAu8; want.len() + 5];
        assert_eq!(s.save_to_buffer(&mut buf, &opts).unwrap(), want.len());
        assert!(
            buf[..want.len()] == want[..],
            "buffer {align}: gaps are written as zeros"
        );
        let mut streamed = Vec::new();
        s.save_to_writer(&mut streamed, &opts, None).unwrap();
        assert!(streamed == want, "stream {align}");
        let prepared = s.prepare(&opts).unwrap();
        let mut rendered = vec![0xAAu8; want.len()];
        // Odd-sized ranges in reverse order, so some begin inside a gap.
        let step = 12_345usize;
        let mut starts: Vec<usize> = (0..want.len()).step_by(step).collect();
        starts.reverse();
        for at in starts {
            let end = (at + step).min(want.len());
            prepared.render(at as u64, &mut rendered[at..end]).unwrap();
        }
        assert!(rendered == want, "prepared {align}");
        let mut f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("fd"))
            .unwrap();
        f.write_all(&vec![0xAAu8; 100 + want.len()]).unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        s.save_to_file(&f, &opts, None).unwrap();
        let mut back = Vec::new();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.read_to_end(&mut back).unwrap();
        assert!(back == want, "fd {align}");

        // Layout: where each array's data is in the file.
        let listed = restore(&path, &RestoreOptions::default().metadata_only(true)).unwrap();
        for (info, (_, data)) in listed.arrays().iter().zip(&arrays) {
            let at = info.file_offset.unwrap();
            let m = if data.len() as u64 >= align {
                align
            } else {
                64
            };
            assert_eq!(at % m, 0, "{align}: {} at {at}", info.key);
        }
        // The zip crate reads every member and checks its CRC.
        let mut z = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
        for i in 0..z.len() {
            let mut member = z.by_index(i).unwrap();
            let mut bytes = Vec::new();
            member.read_to_end(&mut bytes).unwrap();
        }
        // Our restore, copied and mapped.
        for mmap in [false, true] {
            let a = restore(&path, &RestoreOptions::default().mmap(mmap)).unwrap();
            for (i, (k, d)) in arrays.iter().enumerate() {
                let j = a.find(k).unwrap();
                assert_eq!(a.data(j).unwrap(), &d[..], "{align} mmap={mmap} {k}");
                let info = &a.arrays()[j];
                if mmap && !d.is_empty() {
                    assert!(info.mapped, "{align}: {k} is mapped in place");
                    let m = if d.len() as u64 >= align { align } else { 64 };
                    assert_eq!(a.data_ptr(j).unwrap() as usize % m as usize, 0, "{k} {i}");
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_alignment_is_invalid_arg_for_every_save() {
    let dir = common::scratch("align", "bad");
    let arrays = arrays();
    let s = saver(&arrays);
    for bad in [0u64, 1, 32, 100, 3 << 12, 2 << 20] {
        let opts = SaveOptions::default().alignment(bad);
        let kind = |r: psv::Result<()>| r.unwrap_err().kind();
        assert_eq!(
            kind(s.save(dir.join("x"), &opts).map(|_| ())),
            ErrorKind::InvalidArg
        );
        assert_eq!(kind(s.size(&opts).map(|_| ())), ErrorKind::InvalidArg);
        assert_eq!(kind(s.to_vec(&opts).map(|_| ())), ErrorKind::InvalidArg);
        let z = opts.clone().compression(1);
        assert_eq!(kind(s.to_vec(&z).map(|_| ())), ErrorKind::InvalidArg);
    }
    assert!(!dir.join("x.npz").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gaps_before_local_headers_stay_in_the_image_block() {
    // 128 KiB alignment: padding above the extra field's 64 KiB goes before local headers, and
    // is small next to 2 MiB arrays, so the restore uses the image block (one common start).
    let dir = common::scratch("align", "image");
    let arrays: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("k{i}"), pattern((2 << 20) + 4097 * i, i as u64 + 1)))
        .chain([("tiny".to_string(), pattern(7, 99))])
        .collect();
    let s = saver(&arrays);
    let path = s
        .save(dir.join("img"), &SaveOptions::default().alignment(1 << 17))
        .unwrap();
    // Gaps are there: some member's local header starts after the previous member's end.
    let mut z = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let spans: Vec<(u64, u64)> = (0..z.len())
        .map(|i| {
            let m = z.by_index_raw(i).unwrap();
            let end = m.data_start().unwrap() + m.compressed_size();
            (m.header_start(), end)
        })
        .collect();
    assert!(spans.windows(2).any(|w| w[1].0 > w[0].1), "{spans:?}");
    let a = restore(&path, &RestoreOptions::default()).unwrap();
    let starts: Vec<i64> = a
        .arrays()
        .iter()
        .map(|x| x.file_offset.unwrap() as i64 - x.offset as i64)
        .collect();
    assert!(
        starts.iter().all(|&s| s == starts[0]),
        "image block used: {starts:?}"
    );
    for (k, d) in &arrays {
        let j = a.find(k).unwrap();
        assert_eq!(a.data(j).unwrap(), &d[..], "{k}");
        if d.len() >= 1 << 17 {
            assert_eq!(a.arrays()[j].file_offset.unwrap() % (1 << 17), 0);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
