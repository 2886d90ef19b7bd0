//! `psv`: the libpsv command line.
//!
//! A thin client of the Rust API; it has no format code of its own.
//!
//! - `psv ls FILE [--json]` lists the arrays (a metadata-only restore: fast even for huge files).
//! - `psv verify FILE` restores every array with CRC checks and names each bad member.
//! - `psv cp SRC DST [--compress LEVEL] [--threads N]` copies any `.npz` into an aligned psv file.
//! - `psv bench [--size-mib N] [--dir DIR]` measures this machine's page-cache limits and psv's
//!   save and restore speed against them.
//!
//! Exit status: 0 success, 1 error (or, for `verify`, an unsound file), 2 bad usage. Progress
//! bars appear on stderr only when it is a terminal and the work is large.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use psv::{restore, restore_with_progress, Archive, Dtype, RestoreOptions, SaveOptions, Saver};

const USAGE: &str = "\
usage:
  psv ls FILE [--json]                         list the arrays of a .npz
  psv verify FILE                              restore every array with CRC checks
  psv cp SRC DST [--compress LEVEL] [--threads N]
                                               copy any .npz into an aligned psv file
  psv bench [--size-mib N] [--dir DIR]         measure save/restore speed on this machine
  psv help [COMMAND]                           show this help, or one command's
  psv --version                                print the version

Exit status: 0 success, 1 error (or an unsound file for verify), 2 bad usage.";

const LS_HELP: &str = "\
usage: psv ls FILE [--json]      (FILE - reads standard input)

Lists one line per array: key, dtype (numpy descr), shape, bytes of data, order (C or F),
compression (stored, deflated, bzip2, lzma or deflate64), and whether the data is 64-byte aligned in
the file (\"-\" for compressed members). Members that are not arrays are listed as skipped. Reads only headers.

  --json    print a JSON document with the same fields";

const VERIFY_HELP: &str = "\
usage: psv verify FILE           (FILE - reads standard input)

Restores every array with CRC-32 verification and prints OK or the error for each, then a
summary. Exits 0 only if every array is sound. A pipe on standard input is read once: the
first error found is reported.";

const CP_HELP: &str = "\
usage: psv cp SRC DST [--compress LEVEL] [--threads N]

Restores SRC (any .npz, e.g. written by numpy) and saves every array, with its dtype, shape and
order, to DST as a psv file (array data 64-byte aligned; \".npz\" is appended if missing).
Members of SRC that are not arrays are not copied (a warning names them). SRC - reads
standard input (a pipe is read once, each array straight into its place); DST - writes the archive to standard output (the report
then goes to standard error).

  --compress LEVEL   0 stores (default); 1-9 deflates at that level
  --threads N        worker threads; 0 (default) means one per core";

const BENCH_HELP: &str = "\
usage: psv bench [--size-mib N] [--dir DIR]

Measures the page-cache write limit (one thread writing N MiB, two threads pwrite-ing halves),
the fresh-buffer read limit (two threads pread-ing halves into a new, pre-touched buffer), then
psv save and restore of N MiB as 8 float32 arrays; prints GB/s and psv's ratio to each limit.
Best of 3 runs, each after `sync`. Needs about 3N MiB of memory and N MiB of disk.

  --size-mib N   data size in MiB (default 1024)
  --dir DIR      where the scratch files go (default: the current directory)";

/// Work smaller than this gets no progress bar.
const BAR_MIN_BYTES: u64 = 256 << 20;
/// `verify` restores arrays in batches of at most this many bytes...
const VERIFY_BATCH_BYTES: usize = 256 << 20;
/// ... and this many keys (each restore re-reads the central directory).
const VERIFY_BATCH_KEYS: usize = 4096;

/// How a command failed.
enum Fail {
    /// Bad command line: message, then the usage to show; exit 2.
    Usage(String, &'static str),
    /// The work failed: exit 1.
    Run(String),
}

impl From<psv::Error> for Fail {
    fn from(e: psv::Error) -> Self {
        Fail::Run(e.message().to_owned())
    }
}

fn io_fail(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Fail {
    move |e| Fail::Run(format!("{context}: {e}"))
}

type CmdResult = Result<ExitCode, Fail>;

fn main() -> ExitCode {
    // SAFETY: called first thing, before any other thread exists; restores the default SIGPIPE
    // action so `psv ls big.npz | head` ends quietly instead of panicking in println!.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(Fail::Usage(msg, usage)) => {
            eprintln!("psv: {msg}\n\n{usage}");
            ExitCode::from(2)
        }
        Err(Fail::Run(msg)) => {
            eprintln!("psv: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[OsString]) -> CmdResult {
    let Some(first) = args.first() else {
        return Err(Fail::Usage("no command given".into(), USAGE));
    };
    let rest = &args[1..];
    match first.to_str() {
        Some("ls") => cmd_ls(rest),
        Some("verify") => cmd_verify(rest),
        Some("cp") => cmd_cp(rest),
        Some("bench") => cmd_bench(rest),
        Some("help" | "--help" | "-h") => cmd_help(rest),
        Some("--version" | "-V") if rest.is_empty() => {
            println!("psv {}", psv::VERSION);
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(Fail::Usage(
            format!("unknown command {:?}", first.to_string_lossy()),
            USAGE,
        )),
    }
}

fn cmd_help(args: &[OsString]) -> CmdResult {
    let text = match args {
        [] => USAGE,
        [cmd] => match cmd.to_str() {
            Some("ls") => LS_HELP,
            Some("verify") => VERIFY_HELP,
            Some("cp") => CP_HELP,
            Some("bench") => BENCH_HELP,
            Some("help") => USAGE,
            _ => {
                return Err(Fail::Usage(
                    format!("no help for {:?}", cmd.to_string_lossy()),
                    USAGE,
                ))
            }
        },
        _ => return Err(Fail::Usage("help takes one command".into(), USAGE)),
    };
    println!(
        "psv {}: save and restore NumPy .npz files in parallel\n",
        psv::VERSION
    );
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Argument parsing: positionals and `--flag`, `--flag VALUE` or `--flag=VALUE`; strict.

/// A parsed command line of one command.
struct Parsed {
    positional: Vec<OsString>,
    values: HashMap<&'static str, OsString>,
    switches: Vec<&'static str>,
}

/// `None` if the command's `--help` was asked for.
fn parse(
    args: &[OsString],
    help: &'static str,
    n_positional: usize,
    with_value: &[&'static str],
    switches: &[&'static str],
) -> Result<Option<Parsed>, Fail> {
    let usage = |msg: String| Fail::Usage(msg, help);
    let mut p = Parsed {
        positional: Vec::new(),
        values: HashMap::new(),
        switches: Vec::new(),
    };
    let mut it = args.iter();
    let mut flags_done = false;
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        if flags_done || !text.starts_with('-') || text == "-" {
            p.positional.push(arg.clone());
            continue;
        }
        if text == "--" {
            flags_done = true;
            continue;
        }
        if text == "--help" || text == "-h" {
            return Ok(None);
        }
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (&*text, None),
        };
        if let Some(&flag) = with_value.iter().find(|&&f| f == name) {
            let value = match inline {
                Some(v) => OsString::from(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))?,
            };
            if p.values.insert(flag, value).is_some() {
                return Err(usage(format!("{flag} given twice")));
            }
        } else if let Some(&flag) = switches.iter().find(|&&f| f == name) {
            if inline.is_some() {
                return Err(usage(format!("{flag} takes no value")));
            }
            if p.switches.contains(&flag) {
                return Err(usage(format!("{flag} given twice")));
            }
            p.switches.push(flag);
        } else {
            return Err(usage(format!("unknown option {text}")));
        }
    }
    if p.positional.len() != n_positional {
        return Err(usage(format!(
            "expected {n_positional} argument{}, got {}",
            if n_positional == 1 { "" } else { "s" },
            p.positional.len()
        )));
    }
    Ok(Some(p))
}

impl Parsed {
    fn number<T: std::str::FromStr>(
        &self,
        flag: &str,
        default: T,
        ok: impl Fn(&T) -> bool,
        help: &'static str,
    ) -> Result<T, Fail> {
        let Some(v) = self.values.get(flag) else {
            return Ok(default);
        };
        v.to_str()
            .and_then(|s| s.parse::<T>().ok())
            .filter(|n| ok(n))
            .ok_or_else(|| {
                Fail::Usage(
                    format!("bad value {:?} for {flag}", v.to_string_lossy()),
                    help,
                )
            })
    }
}

fn print_help(help: &str) -> CmdResult {
    println!("{help}");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// A progress bar on stderr, created on the first report of large work, only on a terminal.
struct Progress {
    label: &'static str,
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(label: &'static str) -> Self {
        Progress {
            label,
            enabled: std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    fn update(&mut self, done: u64, total: u64) -> bool {
        if self.bar.is_none() && total >= BAR_MIN_BYTES {
            let style = ProgressStyle::with_template(
                "{prefix:>6} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = ProgressBar::new(total)
                .with_style(style)
                .with_prefix(self.label);
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
        }
        true
    }

    /// Prints a line to stdout without tearing the bar.
    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// An archive to read: a path, or `-`: standard input. A pipe on standard input is read once,
/// front to back (the stream restore); a file redirected to it is read like a path.
enum Input {
    Path(PathBuf),
    Stdin { file: File, seekable: bool },
}

impl Input {
    /// The input an argument names.
    fn from_arg(arg: &OsString) -> Result<Input, Fail> {
        if arg == "-" {
            let file = File::from(
                std::os::fd::AsFd::as_fd(&std::io::stdin())
                    .try_clone_to_owned()
                    .map_err(io_fail("cannot use standard input".to_owned()))?,
            );
            let seekable = file.metadata().is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_file() || m.file_type().is_block_device()
            }) && std::io::Seek::stream_position(&mut &file).is_ok();
            return Ok(Input::Stdin { file, seekable });
        }
        Ok(Input::Path(PathBuf::from(arg)))
    }

    /// Where a restore reads it from (a pipe: read as a stream, once).
    fn source(&self) -> psv::Source<'_> {
        match self {
            Input::Path(p) => psv::Source::from(p),
            Input::Stdin { file, .. } => psv::Source::from(file),
        }
    }

    /// True if it can be read only once (a pipe or socket on standard input).
    fn one_pass(&self) -> bool {
        matches!(
            self,
            Input::Stdin {
                seekable: false,
                ..
            }
        )
    }

    /// Its name in messages.
    fn shown(&self) -> String {
        match self {
            Input::Path(p) if p.exists() => p.display().to_string(),
            Input::Path(p) => psv::npz_path(p).display().to_string(),
            Input::Stdin { .. } => "<stdin>".to_owned(),
        }
    }

    /// Its length in bytes, when known.
    fn len(&self) -> Option<u64> {
        match self {
            Input::Path(p) => file_len(p),
            Input::Stdin { file, seekable } => {
                seekable.then(|| file.metadata().ok().map(|m| m.len()))?
            }
        }
    }
}

fn restore_shown(
    input: &Input,
    opts: &RestoreOptions,
    label: &'static str,
) -> psv::Result<Archive> {
    let mut progress = Progress::new(label);
    if progress.enabled {
        restore_with_progress(input.source(), opts, &mut |d, t| progress.update(d, t))
    } else {
        restore(input.source(), opts)
    }
}

/// Headers only; the block-size cap does not apply since no data is read.
fn list(input: &Input) -> psv::Result<Archive> {
    restore(
        input.source(),
        &RestoreOptions::default()
            .metadata_only(true)
            .max_total_bytes(Some(u64::MAX)),
    )
}

/// numpy's spelling: `()`, `(5,)`, `(2, 3)`.
fn shape_text(shape: &[u64]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// A key or member name with control characters escaped, so one entry stays one line.
fn name_text(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

fn gbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / 1e9 / time.as_secs_f64().max(1e-9)
}

/// `2.55 GB/s`, or `130 MB/s` below 1 GB/s.
fn speed(bytes: u64, time: Duration) -> String {
    let v = gbps(bytes, time);
    if v >= 1.0 {
        format!("{v:.2} GB/s")
    } else {
        format!("{:.0} MB/s", v * 1e3)
    }
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path)
        .or_else(|_| std::fs::metadata(psv::npz_path(path)))
        .ok()
        .map(|m| m.len())
}

/// The compression column's word for a member's method.
fn compression_text(a: &psv::ArrayInfo) -> &'static str {
    match a.method {
        psv::Method::Stored => "stored",
        psv::Method::Deflated => "deflated",
        psv::Method::Bzip2 => "bzip2",
        psv::Method::Lzma => "lzma",
        psv::Method::Deflate64 => "deflate64",
        other => other.name(),
    }
}

/// `(compression, aligned)` columns of one array.
fn layout_text(a: &psv::ArrayInfo) -> (&'static str, &'static str) {
    match (a.compressed, a.file_offset) {
        (false, Some(off)) if off % 64 == 0 => ("stored", "yes"),
        (false, _) => ("stored", "no"),
        (true, _) => (compression_text(a), "-"),
    }
}

// ---------------------------------------------------------------------------------------------
// psv ls

fn cmd_ls(args: &[OsString]) -> CmdResult {
    let Some(p) = parse(args, LS_HELP, 1, &[], &["--json"])? else {
        return print_help(LS_HELP);
    };
    let input = Input::from_arg(&p.positional[0])?;
    let archive = list(&input)?;
    if p.switches.contains(&"--json") {
        let arrays: Vec<serde_json::Value> = archive
            .arrays()
            .iter()
            .map(|a| {
                serde_json::json!({
                    "key": a.key,
                    "dtype": a.descr_string,
                    "shape": a.shape,
                    "bytes": a.nbytes,
                    "fortran_order": a.fortran_order,
                    "compression": compression_text(a),
                    "aligned": a.file_offset.map(|o| o % 64 == 0),
                    "file_offset": a.file_offset,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "file": input.shown(),
            "arrays": arrays,
            "skipped": archive.skipped(),
        });
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Fail::Run(format!("cannot format JSON: {e}")))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }

    let mut rows: Vec<[String; 7]> = vec![[
        "KEY",
        "DTYPE",
        "SHAPE",
        "BYTES",
        "ORDER",
        "COMPRESSION",
        "ALIGNED",
    ]
    .map(String::from)];
    let mut total: u64 = 0;
    for a in archive.arrays() {
        let (compression, aligned) = layout_text(a);
        total += a.nbytes as u64;
        rows.push([
            name_text(&a.key),
            a.descr_string.clone(),
            shape_text(&a.shape),
            a.nbytes.to_string(),
            if a.fortran_order { "F" } else { "C" }.into(),
            compression.into(),
            aligned.into(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, (cell, w)) in row.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if c == 3 {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            if c + 1 < row.len() {
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for name in archive.skipped() {
        out.push_str(&format!("skipped: {} (not an array)\n", name_text(name)));
    }
    out.push_str(&format!(
        "{} array{}, {} of data",
        archive.len(),
        if archive.len() == 1 { "" } else { "s" },
        human(total)
    ));
    if !archive.skipped().is_empty() {
        out.push_str(&format!(", {} skipped", archive.skipped().len()));
    }
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// psv verify

fn cmd_verify(args: &[OsString]) -> CmdResult {
    let Some(p) = parse(args, VERIFY_HELP, 1, &[], &[])? else {
        return print_help(VERIFY_HELP);
    };
    let input = Input::from_arg(&p.positional[0])?;
    let shown = input.shown();
    if input.one_pass() {
        return verify_one_pass(&input, &shown);
    }
    let listing = list(&input)?;
    let arrays = listing.arrays();
    let grand_total: u64 = arrays.iter().map(|a| a.nbytes as u64).sum();
    let mut progress = Progress::new("verify");
    let mut done_bytes: u64 = 0;
    let restore_keys = |keys: Vec<String>, progress: &mut Progress, base: u64, span: u64| {
        let opts = RestoreOptions::default().keys(keys).verify_crc(true);
        if progress.enabled {
            restore_with_progress(input.source(), &opts, &mut |d, t| {
                let scaled = (d as u128 * span as u128 / (t.max(1) as u128)) as u64;
                progress.update(base + scaled, grand_total)
            })
            .map(drop)
        } else {
            restore(input.source(), &opts).map(drop)
        }
    };

    // Batches keep the number of restores (each re-reads the central directory) and the memory
    // of one restore bounded; a batch that fails is retried key by key to name every bad member.
    let mut bad = 0usize;
    let mut start = 0;
    while start < arrays.len() {
        let mut end = start + 1;
        let mut bytes = arrays[start].nbytes;
        while end < arrays.len()
            && end - start < VERIFY_BATCH_KEYS
            && bytes + arrays[end].nbytes <= VERIFY_BATCH_BYTES
        {
            bytes += arrays[end].nbytes;
            end += 1;
        }
        let batch = &arrays[start..end];
        let keys: Vec<String> = batch.iter().map(|a| a.key.clone()).collect();
        let results: Vec<Result<(), psv::Error>> =
            match restore_keys(keys, &mut progress, done_bytes, bytes as u64) {
                Ok(()) => batch.iter().map(|_| Ok(())).collect(),
                Err(e) if batch.len() == 1 => vec![Err(e)],
                Err(_) => batch
                    .iter()
                    .map(|a| restore_keys(vec![a.key.clone()], &mut progress, done_bytes, 0))
                    .collect(),
            };
        for (a, r) in batch.iter().zip(results) {
            match r {
                Ok(()) => progress.println(&format!("OK   {}", name_text(&a.key))),
                Err(e) => {
                    bad += 1;
                    progress.println(&format!("BAD  {}: {}", name_text(&a.key), e.message()));
                }
            }
        }
        done_bytes += bytes as u64;
        progress.update(done_bytes, grand_total);
        start = end;
    }
    drop(progress);
    for name in listing.skipped() {
        println!("SKIP {} (not an array; not checked)", name_text(name));
    }
    let n = arrays.len();
    let mut summary = format!(
        "{shown}: {} of {n} array{} OK",
        n - bad,
        if n == 1 { "" } else { "s" }
    );
    if bad > 0 {
        summary.push_str(&format!(", {bad} bad"));
    }
    if !listing.skipped().is_empty() {
        summary.push_str(&format!(
            ", {} non-array member{} skipped",
            listing.skipped().len(),
            if listing.skipped().len() == 1 {
                ""
            } else {
                "s"
            }
        ));
    }
    println!("{summary}");
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `verify` of a pipe: one restore of everything, read once (a stream cannot be read again to
/// name every bad array: the first error is reported).
fn verify_one_pass(input: &Input, shown: &str) -> CmdResult {
    let opts = RestoreOptions::default().verify_crc(true);
    match restore_shown(input, &opts, "verify") {
        Ok(archive) => {
            for a in archive.arrays() {
                println!("OK   {}", name_text(&a.key));
            }
            for name in archive.skipped() {
                println!("SKIP {} (not an array; not checked)", name_text(name));
            }
            let n = archive.len();
            println!(
                "{shown}: {n} of {n} array{} OK",
                if n == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("BAD  {}", e.message());
            println!("{shown}: bad (read once from a pipe: the first error is shown)");
            Ok(ExitCode::from(1))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// psv cp

fn cmd_cp(args: &[OsString]) -> CmdResult {
    let Some(p) = parse(args, CP_HELP, 2, &["--compress", "--threads"], &[])? else {
        return print_help(CP_HELP);
    };
    let compression: u32 = p.number("--compress", 0, |&l| l <= 9, CP_HELP)?;
    let threads: usize = p.number("--threads", 0, |_| true, CP_HELP)?;
    let src = Input::from_arg(&p.positional[0])?;
    let to_stdout = p.positional[1] == "-";
    let dst = PathBuf::from(&p.positional[1]);
    let src_shown = src.shown();

    let t0 = Instant::now();
    let archive = restore_shown(&src, &RestoreOptions::default().threads(threads), "read")?;
    let read_time = t0.elapsed();
    for name in archive.skipped() {
        eprintln!(
            "psv: warning: {src_shown}: member {:?} is not an array; not copied",
            name
        );
    }
    let mut saver = Saver::new();
    let mut data_bytes: u64 = 0;
    for (i, a) in archive.arrays().iter().enumerate() {
        let data = archive
            .data(i)
            .ok_or_else(|| Fail::Run(format!("{src_shown}: no data for {:?}", a.key)))?;
        saver.add_descr(&a.key, data, &a.descr_string, &a.shape, a.fortran_order)?;
        data_bytes += a.nbytes as u64;
    }
    let opts = SaveOptions::default()
        .threads(threads)
        .compression(compression);
    let t1 = Instant::now();
    let mut progress = Progress::new("write");
    let (written, written_len) = if to_stdout {
        // Standard output: positional writes when it is a file, in order when it is a pipe.
        let stdout = std::io::stdout();
        let file = File::from(
            std::os::fd::AsFd::as_fd(&stdout)
                .try_clone_to_owned()
                .map_err(io_fail("cannot use standard output".to_owned()))?,
        );
        let enabled = progress.enabled;
        let mut report = |d, t| progress.update(d, t);
        let report: Option<&mut psv::ProgressFn<'_>> =
            if enabled { Some(&mut report) } else { None };
        let len = saver.save_to_file(&file, &opts, report)?;
        (PathBuf::from("<stdout>"), Some(len))
    } else if progress.enabled {
        let w = saver.save_with_progress(&dst, &opts, &mut |d, t| progress.update(d, t))?;
        let len = file_len(&w);
        (w, len)
    } else {
        let w = saver.save(&dst, &opts)?;
        let len = file_len(&w);
        (w, len)
    };
    drop(progress);
    let write_time = t1.elapsed();

    let n = archive.len();
    // With the archive on standard output, the report goes to standard error.
    let say = |line: String| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!(
        "read  {src_shown}: {n} array{}, {} of data (file {}) in {:.3} s, {}",
        if n == 1 { "" } else { "s" },
        human(data_bytes),
        src.len().map_or_else(|| "?".into(), human),
        read_time.as_secs_f64(),
        speed(data_bytes, read_time),
    ));
    let how = if compression == 0 {
        "stored".to_owned()
    } else {
        format!("deflate level {compression}")
    };
    say(format!(
        "wrote {}: file {} ({how}) in {:.3} s, {}",
        written.display(),
        written_len.map_or_else(|| "?".into(), human),
        write_time.as_secs_f64(),
        speed(data_bytes, write_time),
    ));
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// psv bench

/// Flushes dirty pages so one timed run does not pay for the previous run's writeback.
fn sync_all() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Removes the scratch files however the benchmark ends.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Best (shortest) of 3 runs; each run prepares, then calls [`start`] and times from there.
fn best_of_3(mut run: impl FnMut() -> Result<Duration, Fail>) -> Result<Duration, Fail> {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        best = best.min(run()?);
    }
    Ok(best)
}

/// Syncs, then starts the clock.
fn start() -> Instant {
    sync_all();
    Instant::now()
}

fn remove_if_present(path: &Path) -> Result<(), Fail> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_fail(format!("cannot remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// A zeroed buffer whose pages are all faulted in.
fn touched_buffer(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    for page in buf.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(buf)
}

fn cmd_bench(args: &[OsString]) -> CmdResult {
    let Some(p) = parse(args, BENCH_HELP, 0, &["--size-mib", "--dir"], &[])? else {
        return print_help(BENCH_HELP);
    };
    let mib: usize = p.number(
        "--size-mib",
        1024,
        |&n: &usize| n >= 1 && n.checked_mul(3 << 20).is_some(),
        BENCH_HELP,
    )?;
    let dir = p
        .values
        .get("--dir")
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    if !dir.is_dir() {
        return Err(Fail::Run(format!("{} is not a directory", dir.display())));
    }
    let n = mib << 20;
    let bytes = n as u64;
    let raw = dir.join(format!("psv-bench-{}.raw", std::process::id()));
    let npz = dir.join(format!("psv-bench-{}.npz", std::process::id()));
    let _scratch = Scratch(vec![raw.clone(), npz.clone()]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "psv bench: {mib} MiB (8 float32 arrays) in {}, {cores} core{}, best of 3",
        dir.display(),
        if cores == 1 { "" } else { "s" }
    );
    let report = |what: &str, time: Duration, note: &str| {
        println!("  {what:<30} {:>7.2} GB/s{note}", gbps(bytes, time));
        let _ = std::io::stdout().flush();
    };

    // The data: pre-touched, not all zeros.
    let mut data = vec![0u8; n];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i ^ (i >> 12)) as u8;
    }
    let half = n / 2;
    let cannot_write = |e| io_fail(format!("cannot write {}", raw.display()))(e);

    let write1 = best_of_3(|| {
        remove_if_present(&raw)?;
        let t = start();
        let mut f = File::create(&raw).map_err(cannot_write)?;
        f.write_all(&data).map_err(cannot_write)?;
        drop(f);
        Ok(t.elapsed())
    })?;
    report("page-cache write, 1 thread", write1, "");
    let write2 = best_of_3(|| {
        remove_if_present(&raw)?;
        let t = start();
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&raw)
            .map_err(cannot_write)?;
        f.set_len(bytes).map_err(cannot_write)?;
        std::thread::scope(|s| {
            let (a, b) = data.split_at(half);
            let second = s.spawn(|| f.write_all_at(b, half as u64));
            let first = f.write_all_at(a, 0);
            first.and(
                second
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panic"))),
            )
        })
        .map_err(cannot_write)?;
        drop(f);
        Ok(t.elapsed())
    })?;
    report("page-cache write, 2 threads", write2, "");
    let write_limit = write1.min(write2);

    let cannot_read = |e| io_fail(format!("cannot read {}", raw.display()))(e);
    let mut buf = Vec::new();
    let read = best_of_3(|| {
        buf = Vec::new();
        buf = touched_buffer(n);
        let t = start();
        let f = File::open(&raw).map_err(cannot_read)?;
        std::thread::scope(|s| {
            let (a, b) = buf.split_at_mut(half);
            let second = s.spawn(|| f.read_exact_at(b, half as u64));
            let first = f.read_exact_at(a, 0);
            first.and(
                second
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panic"))),
            )
        })
        .map_err(cannot_read)?;
        Ok(t.elapsed())
    })?;
    if buf != data {
        return Err(Fail::Run(format!(
            "{}: read back different bytes",
            raw.display()
        )));
    }
    drop(buf);
    report("fresh-buffer read, 2 threads", read, "");
    remove_if_present(&raw)?;

    let mut saver = Saver::new();
    for (k, part) in data.chunks(n / 8).enumerate() {
        saver.add(&format!("a{k}"), part, Dtype::F32, &[part.len() as u64 / 4])?;
    }
    let save = best_of_3(|| {
        remove_if_present(&npz)?;
        let t = start();
        saver.save(&npz, &SaveOptions::default())?;
        Ok(t.elapsed())
    })?;
    report(
        "psv save",
        save,
        &format!(
            "   {:.2} of the write limit ({:.2} GB/s)",
            write_limit.as_secs_f64() / save.as_secs_f64().max(1e-9),
            gbps(bytes, write_limit)
        ),
    );

    let mut checked = false;
    let restored = best_of_3(|| {
        let t = start();
        let archive = restore(&npz, &RestoreOptions::default())?;
        let time = t.elapsed();
        if !checked {
            let same = data
                .chunks(n / 8)
                .enumerate()
                .all(|(i, part)| archive.data(i) == Some(part));
            if !same {
                return Err(Fail::Run(format!(
                    "{}: restored different bytes",
                    npz.display()
                )));
            }
            checked = true;
        }
        drop(archive);
        Ok(time)
    })?;
    report(
        "psv restore",
        restored,
        &format!(
            "   {:.2} of the read limit ({:.2} GB/s)",
            read.as_secs_f64() / restored.as_secs_f64().max(1e-9),
            gbps(bytes, read)
        ),
    );
    Ok(ExitCode::SUCCESS)
}
