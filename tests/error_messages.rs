//! What a user reads when a file is not a readable `.npz`, or a save cannot start: plain words
//! about the file, never the texts of the crates underneath (the zip crate's
//! `Unexpected end of zip::format::blocks::Zip32CDEBlock`, `Could not find EOCD`, ...).

mod common;

use std::path::PathBuf;

use psv::{restore, Dtype, ErrorKind, RestoreOptions, SaveOptions, Saver};

fn scratch(name: &str) -> PathBuf {
    common::scratch("errmsg", name)
}

/// The bytes of a small psv archive with two arrays.
fn archive_bytes(dir: &std::path::Path) -> Vec<u8> {
    let a = common::pattern(4096, 1);
    let b = common::pattern(24, 2);
    let mut saver = Saver::new();
    saver.add("a", &a, Dtype::U8, &[4096]).unwrap();
    saver.add("b", &b, Dtype::F64, &[3]).unwrap();
    let path = saver.save(dir.join("ok"), &SaveOptions::default()).unwrap();
    std::fs::read(path).unwrap()
}

/// Restores `bytes` from a file and from memory; both must fail with `kind` and the same
/// message apart from the name, which must contain `want` and no crate internals.
fn assert_message(dir: &std::path::Path, name: &str, bytes: &[u8], kind: ErrorKind, want: &str) {
    let path = dir.join(format!("{name}.npz"));
    std::fs::write(&path, bytes).unwrap();
    let from_file = restore(&path, &RestoreOptions::default())
        .err()
        .expect("restoring it must fail");
    let from_memory = restore(bytes, &RestoreOptions::default())
        .err()
        .expect("restoring it from memory must fail");
    for e in [&from_file, &from_memory] {
        let msg = e.message();
        assert_eq!(e.kind(), kind, "{name}: {msg}");
        assert!(msg.contains(want), "{name}: {msg:?} does not say {want:?}");
        for internal in [
            "zip::",
            "EOCD",
            "Zip32",
            "CDEBlock",
            "CDFH",
            "Invalid",
            "invalid Zip archive",
            "failed to fill whole buffer",
        ] {
            assert!(
                !msg.contains(internal),
                "{name}: {msg:?} names {internal:?}"
            );
        }
    }
    assert!(
        from_file.message().contains(&format!("{name}.npz")),
        "{name}: the message names the file: {}",
        from_file.message()
    );
}

#[test]
fn truncated_archives_say_truncated() {
    let dir = scratch("truncated");
    let ok = archive_bytes(&dir);
    // Cut inside the data, inside the central directory, and inside the end record.
    for cut in [100, ok.len() / 2, ok.len() - 60, ok.len() - 10] {
        assert_message(
            &dir,
            &format!("cut{cut}"),
            &ok[..cut],
            ErrorKind::Format,
            "truncated: the end of the archive is missing",
        );
    }
}

#[test]
fn files_that_are_not_zip_archives_say_so() {
    let dir = scratch("notzip");
    assert_message(
        &dir,
        "text",
        b"this is a text file renamed .npz\n",
        ErrorKind::Format,
        "not a zip/.npz file (it starts with \"this is \"",
    );
    assert_message(
        &dir,
        "empty",
        b"",
        ErrorKind::Format,
        "not a zip/.npz file: the file is empty",
    );
    let mut npy = b"\x93NUMPY\x01\x00v\x00".to_vec();
    npy.extend_from_slice(&[b' '; 118]);
    assert_message(
        &dir,
        "npy",
        &npy,
        ErrorKind::Format,
        "not a zip/.npz file: it is a single .npy array",
    );
    assert_message(
        &dir,
        "binary",
        &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5],
        ErrorKind::Format,
        "it starts with \"\\xde\\xad\\xbe\\xef\\x00\\x01\\x02\\x03\"",
    );
}

#[test]
fn damaged_directories_say_damaged() {
    let dir = scratch("damaged");
    let ok = archive_bytes(&dir);
    let end = ok.len() - 22;
    assert_eq!(
        &ok[end..end + 4],
        b"PK\x05\x06",
        "a psv file ends with a plain end record"
    );
    let dir_offset = u32::from_le_bytes(ok[end + 16..end + 20].try_into().unwrap()) as usize;

    // The start of the file is gone: the end record points past itself.
    assert_message(
        &dir,
        "headless",
        &ok[dir_offset - 64..],
        ErrorKind::Format,
        "truncated or damaged: the end record places the central directory at bytes",
    );
    // The first central record's signature is overwritten.
    let mut bad = ok.clone();
    bad[dir_offset] ^= 0xff;
    assert_message(
        &dir,
        "nocentral",
        &bad,
        ErrorKind::Format,
        "damaged: no central directory record at offset",
    );
}

#[test]
fn saving_into_a_missing_directory_says_it_does_not_exist() {
    let dir = scratch("missing_dir");
    let target = dir.join("no_such_dir").join("model");
    let data = common::pattern(64, 3);
    let mut saver = Saver::new();
    saver.add("x", &data, Dtype::U8, &[64]).unwrap();
    let e = saver.save(&target, &SaveOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(e.os_code(), Some(libc::ENOENT));
    let parent = dir.join("no_such_dir");
    let want = format!("directory {} does not exist", parent.display());
    assert!(
        e.message().contains(&want),
        "{:?} does not say {want:?}",
        e.message()
    );
    assert!(!dir.join("no_such_dir").exists());
}
