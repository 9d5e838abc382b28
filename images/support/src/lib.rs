//! What Spindle's guest images share: a check reporter, raw system calls
//! (the `syscall` instruction itself, so no libc wrapper adds, caches or
//! retries anything), errno names for readable output, and the signal
//! flood of the `target` and `echo` images ([`flood`]).
//!
//! The images are ordinary static Linux programs: everything here works the
//! same on the host, which is how they are tested before the kernel runs
//! them.

pub mod flood;

use std::fmt::Display;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Counts checks and prints one line per check: `ok   <name>: <detail>` or
/// `FAIL <name>: <detail>`. `finish` prints the summary and gives the exit
/// code (0 when every check passed, 1 otherwise).
pub struct Checker {
    image: &'static str,
    passed: usize,
    failed: Vec<String>,
}

impl Checker {
    pub fn new(image: &'static str) -> Self {
        Checker {
            image,
            passed: 0,
            failed: Vec::new(),
        }
    }

    /// Records one check.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Display) -> bool {
        if ok {
            self.passed += 1;
            println!("ok   {name}: {detail}");
        } else {
            self.failed.push(name.to_string());
            println!("FAIL {name}: {detail}");
        }
        ok
    }

    /// Records a check that a system call failed with exactly `want`.
    pub fn expect_errno(&mut self, name: &str, got: SysResult, want: i32) -> bool {
        let ok = got == Err(want);
        let detail = format!("{} (expected {})", show(got), errno_name(want));
        self.check(name, ok, detail)
    }

    /// Records a check that a system call succeeded.
    pub fn expect_ok(&mut self, name: &str, got: SysResult) -> Option<i64> {
        self.check(name, got.is_ok(), show(got));
        got.ok()
    }

    pub fn failures(&self) -> usize {
        self.failed.len()
    }

    /// Prints `<image>: N checks passed` or the failed checks; the exit code.
    pub fn finish(self) -> ExitCode {
        if self.failed.is_empty() {
            println!("{}: all {} checks passed", self.image, self.passed);
            ExitCode::SUCCESS
        } else {
            println!(
                "{}: {} of {} checks FAILED: {}",
                self.image,
                self.failed.len(),
                self.passed + self.failed.len(),
                self.failed.join(", ")
            );
            ExitCode::FAILURE
        }
    }
}

/// A raw system call's result: the return value, or the errno.
pub type SysResult = Result<i64, i32>;

/// Decodes the kernel's return convention: -4095..=-1 is `-errno`.
pub fn decode(ret: isize) -> SysResult {
    if (-4095..0).contains(&ret) {
        Err(-ret as i32)
    } else {
        Ok(ret as i64)
    }
}

/// `ok <value>` or the errno's name, for printing.
pub fn show(r: SysResult) -> String {
    match r {
        Ok(v) => format!("ok {v}"),
        Err(e) => errno_name(e).to_string(),
    }
}

/// Executes the `syscall` instruction with six arguments.
///
/// # Safety
/// The call may read or write memory through its arguments, unmap memory,
/// or end the process: the caller answers for what the call does.
#[cfg(target_arch = "x86_64")]
pub unsafe fn syscall6(nr: u64, a: [u64; 6]) -> SysResult {
    let ret: isize;
    // SAFETY: the Linux x86_64 system-call ABI: number in rax, arguments in
    // rdi, rsi, rdx, r10, r8, r9; rcx and r11 are clobbered; the result is
    // in rax. Memory effects are the caller's responsibility (see above).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    decode(ret)
}

/// Shorthand for calls with fewer arguments.
///
/// # Safety
/// As for [`syscall6`].
#[cfg(target_arch = "x86_64")]
pub unsafe fn sys(nr: i64, args: &[u64]) -> SysResult {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: forwarded to the caller.
    unsafe { syscall6(nr as u64, a) }
}

/// The symbolic name of an errno (`E...`), or `errno <n>`.
pub fn errno_name(e: i32) -> &'static str {
    use libc::*;
    match e {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EINTR => "EINTR",
        EIO => "EIO",
        ENXIO => "ENXIO",
        E2BIG => "E2BIG",
        ENOEXEC => "ENOEXEC",
        EBADF => "EBADF",
        ECHILD => "ECHILD",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        EXDEV => "EXDEV",
        ENODEV => "ENODEV",
        ENOTDIR => "ENOTDIR",
        EISDIR => "EISDIR",
        EINVAL => "EINVAL",
        ENFILE => "ENFILE",
        EMFILE => "EMFILE",
        ENOTTY => "ENOTTY",
        EFBIG => "EFBIG",
        ENOSPC => "ENOSPC",
        ESPIPE => "ESPIPE",
        EROFS => "EROFS",
        EMLINK => "EMLINK",
        EPIPE => "EPIPE",
        EDOM => "EDOM",
        ERANGE => "ERANGE",
        EDEADLK => "EDEADLK",
        ENAMETOOLONG => "ENAMETOOLONG",
        ENOLCK => "ENOLCK",
        ENOSYS => "ENOSYS",
        ENOTEMPTY => "ENOTEMPTY",
        ELOOP => "ELOOP",
        ENOMSG => "ENOMSG",
        EIDRM => "EIDRM",
        ENOSTR => "ENOSTR",
        ENODATA => "ENODATA",
        ETIME => "ETIME",
        EOVERFLOW => "EOVERFLOW",
        EBADFD => "EBADFD",
        EILSEQ => "EILSEQ",
        ENOTSOCK => "ENOTSOCK",
        EDESTADDRREQ => "EDESTADDRREQ",
        EMSGSIZE => "EMSGSIZE",
        EPROTOTYPE => "EPROTOTYPE",
        ENOPROTOOPT => "ENOPROTOOPT",
        EPROTONOSUPPORT => "EPROTONOSUPPORT",
        ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        EOPNOTSUPP => "EOPNOTSUPP",
        EPFNOSUPPORT => "EPFNOSUPPORT",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EADDRINUSE => "EADDRINUSE",
        EADDRNOTAVAIL => "EADDRNOTAVAIL",
        ENETDOWN => "ENETDOWN",
        ENETUNREACH => "ENETUNREACH",
        ECONNRESET => "ECONNRESET",
        ENOBUFS => "ENOBUFS",
        EISCONN => "EISCONN",
        ENOTCONN => "ENOTCONN",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        EALREADY => "EALREADY",
        EINPROGRESS => "EINPROGRESS",
        ESTALE => "ESTALE",
        EDQUOT => "EDQUOT",
        ECANCELED => "ECANCELED",
        ENOKEY => "ENOKEY",
        EKEYREJECTED => "EKEYREJECTED",
        EOWNERDEAD => "EOWNERDEAD",
        ENOTRECOVERABLE => "ENOTRECOVERABLE",
        ENOMEDIUM => "ENOMEDIUM",
        EMEDIUMTYPE => "EMEDIUMTYPE",
        512 => "ERESTARTSYS",
        514 => "ERESTARTNOHAND",
        516 => "ERESTART_RESTARTBLOCK",
        524 => "ENOTSUPP",
        _ => "errno (unnamed)",
    }
}

/// A command line of `--name VALUE` options and plain words.
pub struct Args {
    words: Vec<String>,
}

impl Args {
    pub fn from_env() -> Self {
        Args {
            words: std::env::args().skip(1).collect(),
        }
    }

    pub fn from_vec(words: Vec<String>) -> Self {
        Args { words }
    }

    /// Removes `--name VALUE` and parses VALUE; `Ok(None)` when absent.
    pub fn take<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, String> {
        let Some(i) = self.words.iter().position(|w| w == name) else {
            return Ok(None);
        };
        let Some(value) = self.words.get(i + 1).cloned() else {
            return Err(format!("{name} needs a value"));
        };
        self.words.drain(i..=i + 1);
        value
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} {value:?}: not a valid value"))
    }

    /// Removes a `--name` flag; true when it was there.
    pub fn flag(&mut self, name: &str) -> bool {
        match self.words.iter().position(|w| w == name) {
            Some(i) => {
                self.words.remove(i);
                true
            }
            None => false,
        }
    }

    /// The words left over.
    pub fn rest(&self) -> &[String] {
        &self.words
    }
}

/// Prints `<image>: <message>` on stderr and gives exit code 2 (bad usage).
pub fn usage_error(image: &str, message: &str) -> ExitCode {
    eprintln!("{image}: {message}");
    ExitCode::from(2)
}

/// The one optional argument of a server image: `<image> [PORT]`.
/// `Err` carries the exit code of a usage error (already reported).
pub fn port_argument(image: &str, default: u16) -> Result<u16, ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(default),
        [p] => p
            .parse::<u16>()
            .map_err(|_| usage_error(image, &format!("bad port {p:?}: usage: {image} [PORT]"))),
        _ => Err(usage_error(image, &format!("usage: {image} [PORT]"))),
    }
}

/// Listens on 0.0.0.0:`port`, prints `<image>: listening on 0.0.0.0:PORT`
/// (what the tests wait for) and serves each connection on a thread of its
/// own named `thread`, for ever. Returns only when it cannot listen.
pub fn serve_forever(image: &str, port: u16, thread: &str, serve: fn(TcpStream)) -> ExitCode {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{image}: cannot listen on 0.0.0.0:{port}: {e}");
            return ExitCode::from(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    println!("{image}: listening on 0.0.0.0:{port}");
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let spawned = std::thread::Builder::new()
                    .name(thread.into())
                    .spawn(move || serve(stream));
                if let Err(e) = spawned {
                    eprintln!("{image}: cannot start a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors or memory, a connection reset before
                // accept: carry on after a breath.
                eprintln!("{image}: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_follows_the_kernel_convention() {
        assert_eq!(decode(0), Ok(0));
        assert_eq!(decode(12), Ok(12));
        assert_eq!(decode(-14), Err(libc::EFAULT));
        assert_eq!(decode(-4095), Err(4095));
        assert_eq!(decode(-4096), Ok(-4096));
    }

    #[test]
    fn raw_syscalls_report_errno() {
        // SAFETY: getpid and an unknown number touch no memory.
        unsafe {
            assert_eq!(sys(libc::SYS_getpid, &[]), Ok(std::process::id() as i64));
            assert_eq!(sys(999, &[]), Err(libc::ENOSYS));
        }
    }

    #[test]
    fn options_are_taken_out() {
        let mut a = Args::from_vec(
            ["x", "--n", "3", "--f", "y"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        assert_eq!(a.take::<u32>("--n"), Ok(Some(3)));
        assert!(a.flag("--f"));
        assert_eq!(a.take::<u32>("--n"), Ok(None));
        assert_eq!(a.rest(), ["x", "y"]);
        let mut b = Args::from_vec(vec!["--n".into()]);
        assert!(b.take::<u32>("--n").is_err());
        let mut c = Args::from_vec(vec!["--n".into(), "z".into()]);
        assert!(c.take::<u32>("--n").is_err());
    }
}
