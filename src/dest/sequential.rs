//! Sequential I/O on a caller's pipe, socket or character device, whether or not the caller set
//! `O_NONBLOCK` on it. Event loops (asyncio, libuv, tokio) hand out non-blocking descriptors; a
//! plain `read`/`write` on one fails with `EAGAIN` whenever the peer is slower than we are. The
//! fd belongs to the caller, so its flags are left alone: on `EAGAIN` this waits in `poll(2)`
//! for the descriptor to become ready, then tries again, exactly as a blocking descriptor
//! would have waited inside the call.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

/// `Read` + `Write` over a borrowed file that waits instead of failing with `EAGAIN`.
pub(crate) struct Sequential<'f>(pub(crate) &'f File);

/// Waits until `file` is ready for `events` (`POLLIN` or `POLLOUT`), or reports an error or a
/// hang-up (the retried call then returns it). Interrupted waits are resumed.
fn wait_ready(file: &File, events: libc::c_short) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid, initialised pollfd that lives across the call; nfds is 1.
        #[allow(unsafe_code)]
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Read for Sequential<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&mut &*self.0).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_ready(self.0, libc::POLLIN)?
                }
                other => return other,
            }
        }
    }
}

impl Write for Sequential<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match (&mut &*self.0).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_ready(self.0, libc::POLLOUT)?
                }
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A pipe whose both ends are non-blocking: (read end, write end).
    fn nonblocking_pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        // SAFETY: both descriptors were just created and are owned by nothing else.
        #[allow(unsafe_code)]
        unsafe {
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        }
    }

    #[test]
    fn waits_on_a_slow_peer_instead_of_failing_with_eagain() {
        let (reader, writer) = nonblocking_pipe();
        // What the adapter is for: a plain read of an empty non-blocking pipe fails.
        let mut byte = [0u8; 1];
        let plain = (&reader).read(&mut byte).unwrap_err();
        assert_eq!(plain.kind(), io::ErrorKind::WouldBlock);
        // Far more than a pipe holds (64 KiB): the writer waits for the reader, and the reader
        // (started late) for the writer.
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let producer = std::thread::spawn(move || {
            // A plain write of this much takes what fits and stops short.
            let first = (&writer).write(&sent).unwrap();
            assert!(first < sent.len());
            Sequential(&writer).write_all(&sent[first..]).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut got = Vec::new();
        Sequential(&reader).read_to_end(&mut got).unwrap();
        producer.join().unwrap();
        assert!(got == data, "{} bytes read of {}", got.len(), data.len());
    }
}
