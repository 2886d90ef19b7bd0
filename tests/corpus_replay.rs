//! Replays the hostile-input corpus (tests/corpus/, written by make_corpus.py) through
//! `psv::restore` from a path and from memory, asserting the exact status of every file
//! listed in tests/corpus/expected.txt; then replays the committed fuzz corpora
//! (fuzz/corpus/<target>/) through the fuzzed functions, asserting only "no panic".
//!
//! Every call runs under `catch_unwind`, so a panic fails the test naming the file instead of
//! aborting the run, and every mismatch is collected before the test fails: one run lists them all.
//! `PSV_CORPUS_VERBOSE=1` prints every file's status and message.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use psv::{ErrorKind, RestoreOptions};

/// The block limit for corpus restores: far above any honest corpus file, far below a bomb.
const MAX_TOTAL_BYTES: u64 = 1 << 30;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn opts() -> RestoreOptions {
    RestoreOptions::default()
        .threads(2)
        .max_total_bytes(Some(MAX_TOTAL_BYTES))
}

/// The C status name of an error kind (as `psv_status_str` prints it).
fn status_name(kind: ErrorKind) -> &'static str {
    kind.status_name()
}

/// Runs `f`, turning a panic into `Err(message)`.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic payload".to_string())
    })
}

/// A restore's status name and its message (or array count), or a panic's message.
type Outcome = Result<(String, String), String>;

/// The status of a restore result, checking a successful archive's views on the way.
fn outcome(r: psv::Result<psv::Archive>) -> (String, String) {
    match r {
        Ok(a) => {
            for i in 0..a.len() {
                let info = &a.arrays()[i];
                let data = a.data(i).expect("a restored array has data");
                assert_eq!(data.len(), info.nbytes, "array {:?}", info.key);
                let ptr = a.data_ptr(i).expect("a restored array has a pointer");
                assert_eq!(
                    ptr as usize % 64,
                    0,
                    "array {:?} is not 64-aligned",
                    info.key
                );
            }
            ("PSV_OK".to_string(), format!("{} arrays", a.len()))
        }
        Err(e) => (status_name(e.kind()).to_string(), e.message().to_string()),
    }
}

fn expected() -> Vec<(String, String)> {
    let text = fs::read_to_string(root().join("tests/corpus/expected.txt"))
        .expect("tests/corpus/expected.txt (run tests/corpus/make_corpus.py)");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let file = parts.next().expect("file name").to_string();
            let status = parts.next().expect("status").to_string();
            assert!(parts.next().is_none(), "bad expected.txt line {l:?}");
            (file, status)
        })
        .collect()
}

#[test]
fn corpus_statuses_are_exact() {
    let list = expected();
    assert!(
        list.len() >= 40,
        "the corpus holds only {} files",
        list.len()
    );
    let dir = root().join("tests/corpus");
    // Every corpus file must be listed, so none is silently left out.
    let listed: std::collections::HashSet<&str> = list.iter().map(|(f, _)| f.as_str()).collect();
    for entry in fs::read_dir(&dir).expect("tests/corpus") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".npz") {
            assert!(listed.contains(&*name), "{name} is not in expected.txt");
        }
    }

    let mut failures = Vec::new();
    for (file, want) in &list {
        let path = dir.join(file);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let mapped = opts().mmap(true);
        let runs: [(&str, Outcome); 3] = [
            ("restore", guarded(|| outcome(psv::restore(&path, &opts())))),
            (
                "restore_from_memory",
                guarded(|| outcome(psv::restore(&bytes, &opts()))),
            ),
            // mmap mode parses every header from the mapping instead of reading it.
            (
                "restore (mmap)",
                guarded(|| outcome(psv::restore(&path, &mapped))),
            ),
        ];
        for (how, got) in runs {
            // Mapped members' CRCs are not checked: a CRC error may go unseen in mmap mode.
            let got = match got {
                Ok((status, _))
                    if how.ends_with("(mmap)") && want == "PSV_ERR_CRC" && status == "PSV_OK" =>
                {
                    Ok((want.clone(), String::new()))
                }
                other => other,
            };
            if std::env::var_os("PSV_CORPUS_VERBOSE").is_some() {
                eprintln!("{file}: {how}: {got:?}");
            }
            match got {
                Ok((status, _)) if status == *want => {}
                Ok((status, message)) => failures.push(format!(
                    "{file}: {how}: expected {want}, got {status} ({message})"
                )),
                Err(panic) => failures.push(format!("{file}: {how}: PANIC: {panic}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus checks failed:\n  {}",
        failures.len(),
        3 * list.len(),
        failures.join("\n  ")
    );
}

/// The files of a committed fuzz corpus directory (empty if it does not exist).
fn fuzz_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs `f` on every input of a fuzz corpus; returns how many inputs ran, failing on a panic.
fn replay_fuzz_corpus(target: &str, f: impl Fn(&[u8])) -> usize {
    let inputs = fuzz_inputs(target);
    let mut panics = Vec::new();
    for (path, bytes) in &inputs {
        if let Err(p) = guarded(|| f(bytes)) {
            panics.push(format!("{}: PANIC: {p}", short(path)));
        }
    }
    assert!(
        panics.is_empty(),
        "{} of {} {target} inputs panicked:\n  {}",
        panics.len(),
        inputs.len(),
        panics.join("\n  ")
    );
    inputs.len()
}

fn short(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn fuzz_corpus_restore_from_memory_never_panics() {
    let fuzz_opts = RestoreOptions::default()
        .threads(1)
        .max_total_bytes(Some(64 << 20));
    replay_fuzz_corpus("restore_from_memory", |bytes| {
        // Ok or Err are both fine; only a panic fails. The same bytes as a stream, too.
        let _ = outcome(psv::restore(bytes, &fuzz_opts));
        let _ = outcome(psv::restore_stream(bytes, &fuzz_opts));
    });
}

#[test]
fn fuzz_corpus_npy_header_never_panics() {
    replay_fuzz_corpus("npy_header", |bytes| {
        if let Ok(h) = psv::fuzzing::parse_npy_header(bytes, 1 << 20) {
            assert!(h.header_len <= bytes.len());
        }
    });
}

#[test]
fn fuzz_corpus_descr_never_panics() {
    replay_fuzz_corpus("descr", |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = psv::fuzzing::parse_descr_text(text);
        }
    });
}

#[test]
fn fuzz_corpus_collective_manifests_never_panics() {
    let n = replay_fuzz_corpus("collective_manifests", psv::fuzzing::collective_manifests);
    assert!(n > 0, "fuzz/corpus/collective_manifests is empty");
}
