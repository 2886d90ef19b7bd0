//! The `psv` command line: `ls` (text and JSON), `verify` exit codes and bad-member naming, `cp`
//! round trips, a small `bench`, and usage errors.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use psv::{restore, Dtype, RestoreOptions, SaveOptions, Saver};

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli", name)
}

fn psv<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_psv"))
        .args(args)
        .output()
        .expect("cannot run psv")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// A `.npy` file as numpy writes it (version 1.0, header padded to 64 bytes).
fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
    let fortran = if fortran { "True" } else { "False" };
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    dict.push_str(&" ".repeat(total - 10 - dict.len() - 1));
    dict.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v.extend_from_slice(data);
    v
}

/// An archive as other writers make it (the zip crate, no alignment): a stored array, a
/// deflated array, and a member that is not an array.
fn foreign_npz(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;
    let a = pattern(24, 1);
    let b: Vec<u8> = (0..4i64).flat_map(|v| (v * 1000).to_be_bytes()).collect();
    let path = dir.join("foreign.npz");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    z.start_file("a.npy", stored).unwrap();
    z.write_all(&npy("<f4", "(2, 3)", false, &a)).unwrap();
    z.start_file("b.npy", deflated).unwrap();
    z.write_all(&npy(">i8", "(4,)", false, &b)).unwrap();
    z.start_file("notes.txt", stored).unwrap();
    z.write_all(b"not an array").unwrap();
    z.finish().unwrap();
    (path, a, b)
}

/// A psv file with three 300 KB arrays, a Fortran-order array and a record array.
fn psv_npz(dir: &Path, name: &str) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let arrays: Vec<(String, Vec<u8>)> = ["first", "mid", "last"]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), pattern(300_000, i as u8)))
        .collect();
    let fortran = pattern(6 * 8, 7);
    let records = pattern(3 * 12, 9);
    let mut saver = Saver::new();
    for (k, a) in &arrays {
        saver.add(k, a, Dtype::U8, &[a.len() as u64]).unwrap();
    }
    saver
        .add_descr("fort", &fortran, "<f8", &[2, 3], true)
        .unwrap();
    saver
        .add_descr("rec", &records, "[('x', '<i4'), ('y', '<f8')]", &[3], false)
        .unwrap();
    let path = saver.save(dir.join(name), &SaveOptions::default()).unwrap();
    let mut all = arrays;
    all.push(("fort".into(), fortran));
    all.push(("rec".into(), records));
    (path, all)
}

fn metadata(path: &Path) -> psv::Archive {
    restore(path, &RestoreOptions::default().metadata_only(true)).unwrap()
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], offset).unwrap();
}

#[test]
fn ls_text_lists_arrays_and_skipped_members() {
    let dir = scratch("ls-text");
    let (path, _, _) = foreign_npz(&dir);
    let o = psv(&[&path]);
    assert!(!o.status.success(), "a bare path is not a command");
    let o = psv(&["ls".as_ref(), path.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "KEY",
            "DTYPE",
            "SHAPE",
            "BYTES",
            "ORDER",
            "COMPRESSION",
            "ALIGNED"
        ]
    );
    let a = &lines[1];
    assert_eq!(a[..4], ["a", "<f4", "(2,", "3)"]);
    assert_eq!(a[4..], ["24", "C", "stored", a[7]]);
    assert!(a[7] == "yes" || a[7] == "no");
    assert_eq!(lines[2], ["b", ">i8", "(4,)", "32", "C", "deflated", "-"]);
    assert!(text.contains("skipped: notes.txt (not an array)"), "{text}");
    assert!(
        text.lines().last().unwrap().starts_with("2 arrays"),
        "{text}"
    );

    // A psv file: every array is aligned.
    let (path, arrays) = psv_npz(&dir, "aligned");
    let o = psv(&["ls".as_ref(), path.as_os_str()]);
    assert!(o.status.success());
    let text = stdout(&o);
    let rows: Vec<&str> = text.lines().skip(1).take(arrays.len()).collect();
    for (row, (key, data)) in rows.iter().zip(&arrays) {
        assert!(row.starts_with(&format!("{key} ")), "{row}");
        assert!(row.contains(&format!(" {} ", data.len())), "{row}");
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[words.len() - 2..], ["stored", "yes"], "{row}");
    }
    assert!(
        rows[3].contains("(2, 3)") && rows[3].contains(" F "),
        "{}",
        rows[3]
    );
    assert!(
        rows[4].contains("[('x', '<i4'), ('y', '<f8')]"),
        "{}",
        rows[4]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ls_json_has_the_same_fields() {
    let dir = scratch("ls-json");
    let (path, _, _) = foreign_npz(&dir);
    let o = psv(&["ls".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let arrays = doc["arrays"].as_array().unwrap();
    assert_eq!(arrays.len(), 2);
    let a = &arrays[0];
    assert_eq!(a["key"], "a");
    assert_eq!(a["dtype"], "<f4");
    assert_eq!(a["shape"], serde_json::json!([2, 3]));
    assert_eq!(a["bytes"], 24);
    assert_eq!(a["fortran_order"], false);
    assert_eq!(a["compression"], "stored");
    let offset = a["file_offset"].as_u64().unwrap();
    assert_eq!(a["aligned"], offset % 64 == 0);
    let info = metadata(&path);
    assert_eq!(Some(offset), info.arrays()[0].file_offset);
    let b = &arrays[1];
    assert_eq!(b["key"], "b");
    assert_eq!(b["dtype"], ">i8");
    assert_eq!(b["shape"], serde_json::json!([4]));
    assert_eq!(b["compression"], "deflated");
    assert!(b["aligned"].is_null() && b["file_offset"].is_null());
    assert_eq!(doc["skipped"], serde_json::json!(["notes.txt"]));

    let (path, arrays) = psv_npz(&dir, "aligned");
    let o = psv(&["ls".as_ref(), path.as_os_str(), "--json".as_ref()]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let listed = doc["arrays"].as_array().unwrap();
    assert_eq!(listed.len(), arrays.len());
    for (l, (key, data)) in listed.iter().zip(&arrays) {
        assert_eq!(l["key"], key.as_str());
        assert_eq!(l["bytes"], data.len());
        assert_eq!(l["aligned"], true);
    }
    assert_eq!(listed[3]["fortran_order"], true);
    assert_eq!(listed[4]["dtype"], "[('x', '<i4'), ('y', '<f8')]");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_passes_a_good_file_and_names_every_bad_member() {
    let dir = scratch("verify");
    let (path, arrays) = psv_npz(&dir, "good");
    let o = psv(&["verify".as_ref(), path.as_os_str()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    for (key, _) in &arrays {
        assert!(text.contains(&format!("OK   {key}\n")), "{text}");
    }
    assert!(text.contains("5 of 5 arrays OK"), "{text}");

    // One flipped data byte in "mid" and one in "rec": both are named, the others pass.
    let info = metadata(&path);
    for (key, delta) in [("mid", 123_457u64), ("rec", 5)] {
        let a = &info.arrays()[info.find(key).unwrap()];
        flip_byte(&path, a.file_offset.unwrap() + delta);
    }
    let o = psv(&["verify".as_ref(), path.as_os_str()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("BAD  mid: "), "{text}");
    assert!(text.contains("BAD  rec: "), "{text}");
    assert!(text.contains("CRC"), "{text}");
    for key in ["first", "last", "fort"] {
        assert!(text.contains(&format!("OK   {key}\n")), "{text}");
    }
    assert!(text.contains("3 of 5 arrays OK, 2 bad"), "{text}");

    // A foreign file: the non-array member is reported, not failed.
    let (path, _, _) = foreign_npz(&dir);
    let o = psv(&["verify".as_ref(), path.as_os_str()]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("SKIP notes.txt"), "{}", stdout(&o));

    // Not an archive at all: an error, exit 1.
    let junk = dir.join("junk.npz");
    std::fs::write(&junk, b"hello").unwrap();
    let o = psv(&["verify".as_ref(), junk.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("psv: "), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn assert_same_arrays(src: &Path, dst: &Path) {
    let (s, d) = (
        restore(src, &RestoreOptions::default()).unwrap(),
        restore(dst, &RestoreOptions::default()).unwrap(),
    );
    assert_eq!(s.len(), d.len());
    for (i, (x, y)) in s.arrays().iter().zip(d.arrays()).enumerate() {
        assert_eq!(x.key, y.key);
        assert_eq!(x.descr_string, y.descr_string);
        assert_eq!(x.shape, y.shape);
        assert_eq!(x.fortran_order, y.fortran_order);
        assert_eq!(s.data(i).unwrap(), d.data(i).unwrap(), "{}", x.key);
    }
}

#[test]
fn cp_round_trips_into_an_aligned_file() {
    let dir = scratch("cp");
    let (src, a, b) = foreign_npz(&dir);
    let dst = dir.join("copy.npz");
    let o = psv(&[
        "cp".as_ref(),
        src.as_os_str(),
        dst.as_os_str(),
        "--threads".as_ref(),
        "2".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("wrote"), "{}", stdout(&o));
    assert!(stderr(&o).contains("notes.txt"), "{}", stderr(&o));
    assert_same_arrays(&src, &dst);
    let copy = restore(&dst, &RestoreOptions::default()).unwrap();
    assert_eq!(copy.data(0).unwrap(), &a[..]);
    assert_eq!(copy.data(1).unwrap(), &b[..]);
    assert!(copy.skipped().is_empty());
    for info in copy.arrays() {
        assert!(!info.compressed);
        assert_eq!(info.file_offset.unwrap() % 64, 0, "{}", info.key);
    }

    // Fortran order and records survive; the destination gets `.npz` appended; compression.
    let (src, _) = psv_npz(&dir, "src");
    let o = psv(&[
        "cp".as_ref(),
        src.as_os_str(),
        dir.join("deflated").as_os_str(),
        "--compress=6".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dst = dir.join("deflated.npz");
    assert_same_arrays(&src, &dst);
    assert!(metadata(&dst).arrays().iter().all(|a| a.compressed));

    let o = psv(&["cp".as_ref(), src.as_os_str(), dst.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_arrays(&src, &dst);
    assert!(metadata(&dst).arrays().iter().all(|a| !a.compressed));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_runs_and_cleans_up() {
    let dir = scratch("bench");
    let o = psv(&[
        "bench".as_ref(),
        "--size-mib".as_ref(),
        "64".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for what in [
        "page-cache write, 1 thread",
        "page-cache write, 2 threads",
        "fresh-buffer read",
        "psv save",
        "psv restore",
    ] {
        let line = text.lines().find(|l| l.contains(what)).unwrap_or_else(|| {
            panic!("no {what:?} line in\n{text}");
        });
        assert!(line.contains("GB/s"), "{line}");
    }
    assert!(text.contains("of the write limit") && text.contains("of the read limit"));
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "scratch files left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_usage_exits_2_and_errors_exit_1() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["ls"],
        &["ls", "a.npz", "b.npz"],
        &["ls", "a.npz", "--bogus"],
        &["ls", "a.npz", "--json=yes"],
        &["ls", "a.npz", "--json", "--json"],
        &["verify", "a.npz", "-x"],
        &["cp", "a.npz"],
        &["cp", "a.npz", "b.npz", "--compress", "12"],
        &["cp", "a.npz", "b.npz", "--threads", "many"],
        &["cp", "a.npz", "b.npz", "--threads"],
        &["bench", "--size-mib", "0"],
        &["bench", "extra"],
        &["help", "nope"],
        &["--version", "extra"],
    ] {
        let o = psv(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(err.starts_with("psv: "), "{args:?}: {err}");
        assert!(err.contains("usage"), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }

    for args in [
        &["help"][..],
        &["--help"],
        &["help", "cp"],
        &["ls", "--help"],
    ] {
        let o = psv(args);
        assert!(o.status.success(), "{args:?}");
        assert!(stdout(&o).contains("usage"), "{args:?}");
    }
    let o = psv(&["--version"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), format!("psv {}\n", env!("CARGO_PKG_VERSION")));

    let dir = scratch("errors");
    let missing = dir.join("missing.npz");
    let o = psv(&["ls".as_ref(), missing.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("psv: ") && err.contains("missing.npz"),
        "{err}"
    );
    let o = psv(&[
        "bench".as_ref(),
        "--dir".as_ref(),
        missing.as_os_str(),
        "--size-mib".as_ref(),
        "1".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs psv with `input` on standard input.
fn psv_stdin<S: AsRef<std::ffi::OsStr>>(args: &[S], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_psv"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run psv");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

#[test]
fn dash_reads_stdin_and_writes_stdout() {
    let dir = scratch("dash");
    let (src, a, b) = foreign_npz(&dir);
    let bytes = std::fs::read(&src).unwrap();

    // ls - and verify - read standard input.
    let o = psv_stdin(&["ls", "-"], &bytes);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        stdout(&psv(&["ls".as_ref(), src.as_os_str()]))
            .replace(&src.display().to_string(), "<stdin>")
    );
    let o = psv_stdin(&["verify", "-"], &bytes);
    assert!(o.status.success(), "{}", stderr(&o));

    // cp - - : a pipe in, a pipe out; the report goes to standard error.
    let o = psv_stdin(&["cp", "-", "-"], &bytes);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrote <stdout>"), "{}", stderr(&o));
    let copy = restore(&o.stdout[..], &RestoreOptions::default()).unwrap();
    assert_eq!(copy.data(0).unwrap(), &a[..]);
    assert_eq!(copy.data(1).unwrap(), &b[..]);
    // The same bytes as cp to a file.
    let dst = dir.join("copy.npz");
    assert!(psv(&["cp".as_ref(), src.as_os_str(), dst.as_os_str()])
        .status
        .success());
    assert_eq!(o.stdout, std::fs::read(&dst).unwrap());

    // cp SRC - into a file (stdout redirected: positional writes).
    let out = dir.join("redirected.npz");
    let status = Command::new(env!("CARGO_BIN_EXE_psv"))
        .args(["cp".as_ref(), src.as_os_str(), "-".as_ref()])
        .stdout(std::fs::File::create(&out).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&dst).unwrap());

    // verify - of a damaged archive in a pipe: read once, the first error, exit 1.
    let mut bad = bytes.clone();
    let listing = restore(&bytes[..], &RestoreOptions::default()).unwrap();
    let at = listing.arrays()[0].file_offset.unwrap() as usize;
    bad[at] ^= 0x40;
    let o = psv_stdin(&["verify", "-"], &bad);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("BAD") && stdout(&o).contains("CRC"),
        "{}",
        stdout(&o)
    );
    // A file redirected to standard input is read like a path (one batch per key).
    let status = Command::new(env!("CARGO_BIN_EXE_psv"))
        .args(["verify", "-"])
        .stdin(std::fs::File::open(&src).unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // A stream cut short: an error, exit 1, no hang.
    let o = psv_stdin(&["ls", "-"], &bytes[..bytes.len() / 2]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));

    // Garbage on standard input: an error, exit 1.
    let o = psv_stdin(&["ls", "-"], b"not a zip");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ls_names_each_compression_method() {
    // Archives 7-Zip wrote (committed fixtures; see tests/python/data/README.md).
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/data");
    for (file, word) in [
        ("7zip_bzip2.npz", "bzip2"),
        ("7zip_lzma.npz", "lzma"),
        ("7zip_deflate64.npz", "deflate64"),
    ] {
        let path = data.join(file);
        let o = psv(&["ls".as_ref(), path.as_os_str()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = stdout(&o);
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("small "))
            .unwrap_or_else(|| panic!("{file}: {text}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[row.len() - 2..], [word, "-"], "{file}: {text}");
        let o = psv(&["ls".as_ref(), path.as_os_str(), "--json".as_ref()]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for a in doc["arrays"].as_array().unwrap() {
            assert_eq!(a["compression"], word, "{file}");
        }
        let archive = restore(&path, &RestoreOptions::default()).unwrap();
        assert!(archive
            .arrays()
            .iter()
            .all(|a| a.compressed && a.method.name() != "stored"));
    }
}
