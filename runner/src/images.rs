//! Guest images: building the programs in `images/`, choosing the one to
//! run, composing the kernel command line that starts it, and reading back
//! what the process did from the serial log.
//!
//! The kernel contract this module codes against:
//!
//! - the image is QEMU's `-initrd`, the raw static x86_64 Linux ELF file;
//! - on the command line, `init=<name>` is argv[0] and every word after a
//!   lone `--` is argv[1..] (so an argument cannot hold whitespace: the
//!   runner refuses such arguments instead of letting them split);
//!   `respawn=N` starts the image N more times;
//! - the process's stdout and stderr reach COM1 raw; the kernel's own lines
//!   are `[    1.234567] LEVEL target: ...` or start with `spindle: `;
//! - each end of the process is one line
//!   `spindle: process <argv0> (pid <N>) exited with status <S>` (or
//!   `... killed by signal <SIG>`), then
//!   `spindle: memory after exit: <F> free frames, <H> heap bytes in use`;
//!   before starting it, `spindle: memory before process: ...`;
//! - an image the kernel refuses gives `spindle: cannot run <argv0>: <why>`;
//! - QEMU exits with 33 when the last status is 0, 35 otherwise.

pub use crate::process_log::*;

use crate::guest::{GuestResult, RunLimits, run_guest_with};
use crate::qemu::QemuConfig;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target every image is built for.
pub const IMAGE_TARGET: &str = "x86_64-unknown-linux-musl";

/// How an image is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// A workspace member `images/<name>` (package `image-<name>`).
    Rust,
    /// `images/<name>/<name>.c`, built with musl-gcc.
    C,
}

/// One program in `images/`.
#[derive(Clone, Copy, Debug)]
pub struct ImageInfo {
    pub name: &'static str,
    pub kind: ImageKind,
    pub about: &'static str,
}

/// Every image, in the order `cargo spindle build` prints them.
pub const IMAGES: &[ImageInfo] = &[
    ImageInfo {
        name: "hello",
        kind: ImageKind::Rust,
        about: "greeting, argv, --threads N, --sleep-ms N, --poll-ms N, --exit CODE",
    },
    ImageInfo {
        name: "threads",
        kind: ImageKind::Rust,
        about: "64 threads, mutex contention, raw futex ping-pong and timeout, TLS",
    },
    ImageInfo {
        name: "memory",
        kind: ImageKind::Rust,
        about: "mmap/munmap, brk, mprotect, madvise(DONTNEED), a 64 MiB Vec",
    },
    ImageInfo {
        name: "clock",
        kind: ImageKind::Rust,
        about: "clocks, sleeps, gettimeofday, getrandom, uname, ids, affinity, prlimit64",
    },
    ImageInfo {
        name: "badcalls",
        kind: ImageKind::Rust,
        about: "bad arguments must give Linux's exact errno",
    },
    ImageInfo {
        name: "fuzz",
        kind: ImageKind::Rust,
        about: "100,000 random system calls with hostile arguments (--seed N)",
    },
    ImageInfo {
        name: "sysbench",
        kind: ImageKind::Rust,
        about: "system-call, futex and thread benchmarks (BENCH lines)",
    },
    ImageInfo {
        name: "signals",
        kind: ImageKind::Rust,
        about: "signal semantics one by one; `fault KIND`, `raise SIG` for default actions",
    },
    ImageInfo {
        name: "target",
        kind: ImageKind::Rust,
        about: "threads spinning, pausing and sleeping, a signal flood on SIGUSR2 (ctl tests)",
    },
    ImageInfo {
        name: "echo",
        kind: ImageKind::Rust,
        about: "TCP echo server on std::net (`echo [PORT]`, default 7777), a signal flood on SIGUSR2",
    },
    ImageInfo {
        name: "http",
        kind: ImageKind::Rust,
        about: "HTTP/1.1 server on std::net (`http [PORT]`, default 8080): /, /bytes/N",
    },
    ImageInfo {
        name: "iperf",
        kind: ImageKind::Rust,
        about: "iperf3-compatible server and client (`iperf -s`, `iperf -c HOST`; port 5201)",
    },
    ImageInfo {
        name: "netcalls",
        kind: ImageKind::Rust,
        about: "socket system calls one by one: errno, vectored I/O, SIGPIPE, readiness, EINTR",
    },
    ImageInfo {
        name: "chello",
        kind: ImageKind::C,
        about: "C with musl-gcc -static: printf, argv, one pthread",
    },
];

/// Looks up an image by name.
pub fn find_image(name: &str) -> Option<&'static ImageInfo> {
    IMAGES.iter().find(|i| i.name == name)
}

/// The image names, comma-separated, for error messages.
pub fn image_names() -> String {
    IMAGES.iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
}

/// The cargo target directory for image builds (kept apart from the host
/// and kernel builds so no target setting leaks between them).
pub fn images_target_dir() -> PathBuf {
    crate::workspace_root().join("target").join("images")
}

/// Where image `name` lands (release build; the C image too).
pub fn image_artifact(name: &str) -> PathBuf {
    images_target_dir()
        .join(IMAGE_TARGET)
        .join("release")
        .join(name)
}

/// Builds every image (cargo's and musl-gcc's output go to our stderr) and
/// returns `(name, path)` for each.
pub fn build_images() -> Result<Vec<(&'static str, PathBuf)>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root())
        .args([
            "build",
            "--release",
            "--target",
            IMAGE_TARGET,
            "--target-dir",
        ])
        .arg(images_target_dir());
    for image in IMAGES.iter().filter(|i| i.kind == ImageKind::Rust) {
        cmd.args(["-p", &format!("image-{}", image.name)]);
    }
    // Flags meant for the kernel (or anything else) must not reach these
    // ordinary Linux programs.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    // Frame pointers in every image, so `pstack` and gdb walk their stacks.
    cmd.env("RUSTFLAGS", "-C force-frame-pointers=yes");
    let status = cmd
        .status()
        .context("cannot run cargo to build the images")?;
    if !status.success() {
        bail!("building the images failed ({status}); see cargo's errors above");
    }
    let mut built = Vec::new();
    for image in IMAGES {
        let out = image_artifact(image.name);
        if image.kind == ImageKind::C {
            build_c_image(image.name, &out)?;
        }
        if !out.is_file() {
            bail!(
                "image {} built but {} is missing",
                image.name,
                out.display()
            );
        }
        built.push((image.name, out));
    }
    Ok(built)
}

/// `musl-gcc -static -O2 -pthread images/<name>/<name>.c -o <out>`.
///
/// Debian's musl-gcc has no `rcrt1.o`: with `-static-pie` it links a
/// dynamic program (with a `PT_INTERP`) without complaint, so plain
/// `-static` it is; the result is checked to be a static ELF.
fn build_c_image(name: &str, out: &Path) -> Result<()> {
    let src = crate::workspace_root()
        .join("images")
        .join(name)
        .join(format!("{name}.c"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let status = Command::new("musl-gcc")
        .args([
            "-static", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-o",
        ])
        .arg(out)
        .arg(&src)
        .status()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("musl-gcc not found: run `cargo spindle setup`")
            } else {
                anyhow::anyhow!("cannot run musl-gcc: {e}")
            }
        })?;
    if !status.success() {
        bail!("musl-gcc failed on {} ({status})", src.display());
    }
    let bytes = std::fs::read(out).with_context(|| format!("reading {}", out.display()))?;
    if has_interp(&bytes) {
        bail!(
            "musl-gcc produced a dynamically linked {} (it has PT_INTERP)",
            out.display()
        );
    }
    Ok(())
}

/// True when a well-formed ELF64 has a `PT_INTERP` program header.
pub fn has_interp(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let rd16 = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let rd32 = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let rd64 = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if !elf.starts_with(b"\x7fELF") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd64(0x20), rd16(0x36), rd16(0x38)) else {
        return false;
    };
    (0..phnum as usize).any(|i| {
        usize::try_from(phoff)
            .ok()
            .and_then(|off| off.checked_add(i * phentsize as usize))
            .and_then(rd32)
            == Some(PT_INTERP)
    })
}

/// What `--image` resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    pub path: PathBuf,
    /// argv[0]: the image's name, or the file name of a path.
    pub argv0: String,
}

/// Resolves `--image NAME|PATH`. A NAME is one of [`IMAGES`] (built by
/// [`build_images`]); anything with a `/`, or an existing file, is a PATH,
/// which must exist and start with the ELF magic (the kernel judges the
/// rest). Errors say which case failed and why.
pub fn resolve_image(spec: &str) -> Result<ResolvedImage> {
    if spec.is_empty() {
        bail!("--image needs an image name ({}) or a path", image_names());
    }
    let as_path = Path::new(spec);
    // A bare word is an image name when one has it (a file of that name in
    // the current directory is then `./name`), else a path.
    if !spec.contains('/') && (find_image(spec).is_some() || !as_path.exists()) {
        let Some(image) = find_image(spec) else {
            bail!(
                "no image named {spec:?}: the images are {} (or give a path to a static x86_64 Linux ELF)",
                image_names()
            );
        };
        let path = image_artifact(image.name);
        if !path.is_file() {
            bail!(
                "image {} is not built ({} is missing): run `cargo spindle build`",
                image.name,
                path.display()
            );
        }
        return Ok(ResolvedImage {
            path,
            argv0: image.name.to_string(),
        });
    }
    check_elf_file(as_path)?;
    let argv0 = as_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    check_word("the image's file name (its argv[0])", &argv0)?;
    let path = as_path
        .canonicalize()
        .with_context(|| format!("resolving {}", as_path.display()))?;
    Ok(ResolvedImage { path, argv0 })
}

/// The image file must exist, be a regular file and start with `\x7fELF`.
pub fn check_elf_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("image {}: cannot read it", path.display()))?;
    if !meta.is_file() {
        bail!("image {}: not a regular file", path.display());
    }
    let mut magic = [0u8; 4];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path)
            .with_context(|| format!("image {}: cannot open it", path.display()))?;
        let mut got = 0;
        while got < 4 {
            match f.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => bail!("image {}: cannot read it: {e}", path.display()),
            }
        }
        got
    };
    if n < 4 || magic != *b"\x7fELF" {
        bail!(
            "image {}: not an ELF file ({}); give a static x86_64 Linux program",
            path.display(),
            if meta.len() == 0 {
                "it is empty".to_string()
            } else {
                format!("it starts with {:02x?}", &magic[..n])
            }
        );
    }
    Ok(())
}

/// A word of the kernel command line (argv[0] or an argument) must be
/// non-empty printable ASCII without spaces: the kernel splits the line at
/// whitespace and has no quoting.
pub fn check_word(what: &str, word: &str) -> Result<()> {
    if word.is_empty() {
        bail!("{what} is empty: the kernel command line cannot carry an empty word");
    }
    if let Some(bad) = word.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        let why = if bad.is_ascii_whitespace() {
            "whitespace".to_string()
        } else {
            format!("the byte {bad:#04x}")
        };
        bail!(
            "{what} {word:?} contains {why}: process arguments travel on the kernel command line, \
             split at whitespace, so only printable ASCII without spaces is allowed"
        );
    }
    Ok(())
}

/// The kernel command line for running an image: the user's words, then
/// `init=<argv0>`, `respawn=N` if given, and `-- args...` if any.
pub fn compose_append(
    user: Option<&str>,
    argv0: &str,
    respawn: Option<u32>,
    args: &[String],
) -> Result<String> {
    check_word("argv[0]", argv0)?;
    for (i, a) in args.iter().enumerate() {
        check_word(&format!("argument {}", i + 1), a)?;
    }
    let mut words: Vec<String> = Vec::new();
    if let Some(user) = user {
        for w in user.split_whitespace() {
            if w == "--" {
                bail!(
                    "--append must not contain a lone `--` with --image: put process arguments after the runner's own `--`"
                );
            }
            if w.starts_with("init=") || w.starts_with("respawn=") {
                bail!("--append must not set {w:?} with --image: use --image and --respawn");
            }
            words.push(w.to_string());
        }
    }
    words.push(format!("init={argv0}"));
    if let Some(n) = respawn {
        words.push(format!("respawn={n}"));
    }
    if !args.is_empty() {
        words.push("--".to_string());
        words.extend(args.iter().cloned());
    }
    Ok(words.join(" "))
}

/// One boot of an image, for tests and tools.
#[derive(Clone, Debug)]
pub struct ImageBoot {
    /// The kernel, CPUs, memory... (`initrd` and `append` are set here).
    pub base: QemuConfig,
    pub image: PathBuf,
    pub argv0: String,
    pub args: Vec<String>,
    /// `respawn=N`: start the image N more times after it exits.
    pub respawn: Option<u32>,
    /// Extra kernel command-line words (`loglevel=warn`).
    pub extra_append: Vec<String>,
    pub limits: RunLimits,
}

/// What an image boot produced.
#[derive(Clone, Debug)]
pub struct ImageResult {
    pub guest: GuestResult,
    pub process: ProcessLog,
}

impl ImageResult {
    /// The statuses of every run that exited.
    pub fn statuses(&self) -> Vec<i32> {
        self.process.statuses()
    }
}

/// Boots `boot.image` as the guest process (no ELF check: tests hand the
/// kernel broken images on purpose). Errors when QEMU cannot start or an
/// argument cannot travel on the command line.
pub fn run_image(boot: &ImageBoot) -> Result<ImageResult> {
    let extra = boot.extra_append.join(" ");
    let append = compose_append(
        (!extra.is_empty()).then_some(extra.as_str()),
        &boot.argv0,
        boot.respawn,
        &boot.args,
    )?;
    let mut config = boot.base.clone();
    config.initrd = Some(boot.image.clone());
    config.append = Some(match &config.append {
        Some(a) if !a.trim().is_empty() => format!("{a} {append}"),
        _ => append,
    });
    let guest = run_guest_with(&config, boot.limits)?;
    let process = parse_process_log(&guest.log);
    Ok(ImageResult { guest, process })
}

/// Corrupted variants of a good ELF, for the kernel's refusal paths.
pub mod corrupt {
    /// The first 100 bytes only.
    pub fn truncated(elf: &[u8]) -> Vec<u8> {
        elf[..elf.len().min(100)].to_vec()
    }

    /// `\x7fELF` replaced by `\x7fELG`.
    pub fn bad_magic(elf: &[u8]) -> Vec<u8> {
        let mut v = elf.to_vec();
        if v.len() > 3 {
            v[3] = b'G';
        }
        v
    }

    /// `e_phoff` pointing past the end of the file.
    pub fn phdrs_past_end(elf: &[u8]) -> Vec<u8> {
        let mut v = elf.to_vec();
        if v.len() >= 0x28 {
            let past = (elf.len() as u64).saturating_add(0x1000);
            v[0x20..0x28].copy_from_slice(&past.to_le_bytes());
        }
        v
    }

    /// `e_machine` = EM_AARCH64 (183).
    pub fn other_machine(elf: &[u8]) -> Vec<u8> {
        let mut v = elf.to_vec();
        if v.len() >= 0x14 {
            v[0x12..0x14].copy_from_slice(&183u16.to_le_bytes());
        }
        v
    }

    /// Nothing at all.
    pub fn empty(_elf: &[u8]) -> Vec<u8> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::GuestOutcome;

    const SAMPLE: &str = "\
[    0.027723] INFO  spindle: Spindle 0.1.0 booting
[    0.059292] INFO  spindle: ready (boot took 59264 us)
spindle: memory before process: 28000 free frames, 81920 heap bytes in use
hello from spindle
argv[0] = hello
[    0.070000] DEBUG sched: something
argv[1] = a
spindle: process hello (pid 1) exited with status 3
spindle: memory after exit: 27990 free frames, 81936 heap bytes in use
";

    #[test]
    fn the_process_story_is_read_from_the_log() {
        let p = parse_process_log(SAMPLE);
        assert_eq!(
            p.ends,
            vec![ProcessEnd::Exited {
                argv0: "hello".into(),
                pid: 1,
                status: 3
            }]
        );
        assert_eq!(p.statuses(), vec![3]);
        assert_eq!(
            p.memory_before,
            vec![MemoryFigures {
                free_frames: 28000,
                heap_bytes: 81920
            }]
        );
        assert_eq!(
            p.memory_after,
            vec![MemoryFigures {
                free_frames: 27990,
                heap_bytes: 81936
            }]
        );
        assert_eq!(
            p.output,
            "hello from spindle\nargv[0] = hello\nargv[1] = a\n"
        );
        assert_eq!(p.cannot_run, None);
    }

    #[test]
    fn respawns_killed_runs_and_refusals_are_parsed() {
        let log = "spindle: memory before process: 5 free frames, 6 heap bytes in use\n\
                   partial outputspindle: process a b (pid 2) exited with status 0\n\
                   spindle: process x (pid 3) killed by signal 11\n\
                   spindle: process y (pid 4) killed by signal SIGSEGV\n\
                   spindle: cannot run init: not an ELF file\n";
        let p = parse_process_log(log);
        assert_eq!(
            p.ends,
            vec![
                ProcessEnd::Exited {
                    argv0: "a b".into(),
                    pid: 2,
                    status: 0
                },
                ProcessEnd::Killed {
                    argv0: "x".into(),
                    pid: 3,
                    signal: "11".into()
                },
                ProcessEnd::Killed {
                    argv0: "y".into(),
                    pid: 4,
                    signal: "SIGSEGV".into()
                },
            ]
        );
        assert_eq!(p.output, "partial output\n");
        assert_eq!(
            p.cannot_run.as_deref(),
            Some("cannot run init: not an ELF file")
        );
    }

    #[test]
    fn malformed_lines_are_not_process_ends() {
        for line in [
            "spindle: process hello (pid x) exited with status 0",
            "spindle: process hello (pid 1) exited with status",
            "spindle: process hello exited with status 0",
            "spindle: process hello (pid 1) killed by signal ",
        ] {
            assert!(parse_process_log(line).ends.is_empty(), "{line}");
        }
        assert!(
            parse_process_log("spindle: memory after exit: many free frames, 1 heap bytes in use")
                .memory_after
                .is_empty()
        );
    }

    #[test]
    fn kernel_log_lines_are_recognised() {
        assert!(is_kernel_log_line("[    1.234567] INFO  mem: x"));
        assert!(is_kernel_log_line("[12345.000001] ERROR a: b"));
        assert!(!is_kernel_log_line("[1] INFO x"));
        assert!(!is_kernel_log_line("[ 1.2] hello"));
        assert!(!is_kernel_log_line("argv[0] = [ 1.2] INFO"));
    }

    fn exited(status: i32) -> ProcessLog {
        ProcessLog {
            ends: vec![ProcessEnd::Exited {
                argv0: "hello".into(),
                pid: 1,
                status,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_process_status_becomes_the_runner_status() {
        assert_eq!(runner_exit_code(&GuestOutcome::Success, &exited(0)).0, 0);
        assert_eq!(runner_exit_code(&GuestOutcome::Failure, &exited(3)).0, 3);
        assert_eq!(
            runner_exit_code(&GuestOutcome::Failure, &exited(255)).0,
            255
        );
        // Contradictions are failures with a note.
        let (code, note) = runner_exit_code(&GuestOutcome::Success, &exited(3));
        assert_eq!(code, 1);
        assert!(note.is_some());
        let (code, note) = runner_exit_code(&GuestOutcome::Failure, &exited(0));
        assert_eq!(code, 1);
        assert!(note.is_some());
        // No process line: as without an image.
        let none = ProcessLog::default();
        assert_eq!(runner_exit_code(&GuestOutcome::Success, &none).0, 0);
        assert_eq!(runner_exit_code(&GuestOutcome::Failure, &none).0, 1);
        assert_eq!(runner_exit_code(&GuestOutcome::Timeout, &none).0, 2);
        assert_eq!(
            runner_exit_code(&GuestOutcome::Interrupted, &exited(0)).0,
            130
        );
        let killed = ProcessLog {
            ends: vec![ProcessEnd::Killed {
                argv0: "x".into(),
                pid: 1,
                signal: "11".into(),
            }],
            ..Default::default()
        };
        assert_eq!(runner_exit_code(&GuestOutcome::Failure, &killed).0, 139);
        let refused = ProcessLog {
            cannot_run: Some("cannot run x: not ELF".into()),
            ..Default::default()
        };
        let (code, note) = runner_exit_code(&GuestOutcome::Failure, &refused);
        assert_eq!(code, 1);
        assert!(note.unwrap().contains("not ELF"));
    }

    #[test]
    fn arguments_must_survive_the_command_line() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            compose_append(
                Some("loglevel=warn"),
                "hello",
                Some(3),
                &a(&["x", "--exit", "3"])
            )
            .unwrap(),
            "loglevel=warn init=hello respawn=3 -- x --exit 3"
        );
        assert_eq!(
            compose_append(None, "hello", None, &[]).unwrap(),
            "init=hello"
        );
        for bad in ["a b", "tab\there", "", "new\nline", "é", "bell\x07"] {
            let err = compose_append(None, "hello", None, &a(&[bad])).unwrap_err();
            assert!(err.to_string().contains("argument 1"), "{bad:?}: {err}");
        }
        assert!(compose_append(None, "my prog", None, &[]).is_err());
        assert!(compose_append(Some("a -- b"), "hello", None, &[]).is_err());
        assert!(compose_append(Some("init=x"), "hello", None, &[]).is_err());
        assert!(compose_append(Some("respawn=2"), "hello", None, &[]).is_err());
    }

    #[test]
    fn image_specs_are_checked() {
        let err = resolve_image("nosuchimage").unwrap_err().to_string();
        assert!(err.contains("hello") && err.contains("chello"), "{err}");
        assert!(resolve_image("").is_err());
        let dir = std::env::temp_dir().join(format!("spindle-images-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let err = resolve_image(empty.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an ELF") && err.contains("empty"), "{err}");
        let text = dir.join("text");
        std::fs::write(&text, b"#!/bin/sh\n").unwrap();
        let err = resolve_image(text.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an ELF"), "{err}");
        let elf = dir.join("prog");
        std::fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
        let r = resolve_image(elf.to_str().unwrap()).unwrap();
        assert_eq!(r.argv0, "prog");
        let spaced = dir.join("my prog");
        std::fs::write(&spaced, b"\x7fELF").unwrap();
        assert!(resolve_image(spaced.to_str().unwrap()).is_err());
        let missing = dir.join("missing");
        assert!(resolve_image(missing.to_str().unwrap()).is_err());
        assert!(resolve_image(dir.to_str().unwrap()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A minimal ELF64 header with one program header of type `ptype`.
    fn tiny_elf(ptype: u32) -> Vec<u8> {
        let mut v = vec![0u8; 64 + 56];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
        v[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        v[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        v[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        v[64..68].copy_from_slice(&ptype.to_le_bytes());
        v
    }

    #[test]
    fn corruptions_do_what_they_say() {
        let elf = tiny_elf(1);
        assert_eq!(corrupt::truncated(&elf).len(), 100);
        assert_eq!(&corrupt::bad_magic(&elf)[..4], b"\x7fELG");
        let past = corrupt::phdrs_past_end(&elf);
        let phoff = u64::from_le_bytes(past[0x20..0x28].try_into().unwrap());
        assert!(phoff > elf.len() as u64);
        assert_eq!(
            u16::from_le_bytes(corrupt::other_machine(&elf)[0x12..0x14].try_into().unwrap()),
            183
        );
        assert!(corrupt::empty(&elf).is_empty());
        assert!(!has_interp(&elf));
        assert!(has_interp(&tiny_elf(3)));
        assert!(!has_interp(&corrupt::phdrs_past_end(&tiny_elf(3))));
        assert!(!has_interp(b"\x7fELF"));
    }

    #[test]
    fn every_image_directory_is_listed_and_vice_versa() {
        let dir = crate::workspace_root().join("images");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "support")
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = IMAGES.iter().map(|i| i.name.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for image in IMAGES {
            let d = dir.join(image.name);
            match image.kind {
                ImageKind::Rust => assert!(d.join("Cargo.toml").is_file(), "{}", image.name),
                ImageKind::C => assert!(d.join(format!("{}.c", image.name)).is_file()),
            }
        }
    }
}
