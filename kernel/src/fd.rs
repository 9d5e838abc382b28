//! The process's descriptor table (`Process::files`).
//!
//! Owns, per process, the numbered descriptors: each is an open file
//! (`File`, shared by `dup`s and by epoll interest lists, which hold it
//! weakly) plus its descriptor flag `FD_CLOEXEC`. A `File` is the console
//! (stdin reads end of file; stdout and stderr write to the serial
//! console), a socket or an epoll instance, with its file status flags
//! (`O_NONBLOCK`, shared by every descriptor of the file). Numbers are
//! allocated lowest-free, below `MAX_FDS` (`RLIMIT_NOFILE`, else
//! `EMFILE`).
//!
//! Lock order: fd table (a sleeping mutex) → stack → socket state. The
//! table lock is held only to look up, install or remove entries: files are
//! cloned out before they are used and dropped (sockets closed) after it
//! is released.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::errno::Errno;
use crate::net::socket::Socket;
use crate::syscall::poll::Epoll;

/// `RLIMIT_NOFILE`: descriptors 0..MAX_FDS.
pub const MAX_FDS: usize = 1024;

/// File status flags (`fcntl(F_GETFL)`), Linux's values.
pub const O_RDONLY: u32 = 0;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_NONBLOCK: u32 = 0o4000;

/// What an open file is.
pub enum FileKind {
    /// Standard input: always at end of file.
    Stdin,
    /// Standard output or error: the serial console.
    Console,
    Socket(Arc<Socket>),
    Epoll(Arc<Epoll>),
}

/// An open file description.
pub struct File {
    pub kind: FileKind,
    status: AtomicU32,
}

impl File {
    pub fn new(kind: FileKind, status: u32) -> Arc<File> {
        Arc::new(File {
            kind,
            status: AtomicU32::new(status),
        })
    }

    /// The file status flags (access mode and `O_NONBLOCK`).
    pub fn status_flags(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// Changes `O_NONBLOCK` (the only status flag that may change).
    pub fn set_nonblocking(&self, nonblocking: bool) {
        if nonblocking {
            self.status.fetch_or(O_NONBLOCK, Ordering::AcqRel);
        } else {
            self.status.fetch_and(!O_NONBLOCK, Ordering::AcqRel);
        }
    }

    pub fn nonblocking(&self) -> bool {
        self.status_flags() & O_NONBLOCK != 0
    }

    /// The socket, or `ENOTSOCK`.
    pub fn socket(&self) -> Result<&Arc<Socket>, Errno> {
        match &self.kind {
            FileKind::Socket(socket) => Ok(socket),
            _ => Err(Errno::ENOTSOCK),
        }
    }
}

/// One descriptor: its file and `FD_CLOEXEC`.
#[derive(Clone)]
pub struct Descriptor {
    pub file: Arc<File>,
    pub cloexec: bool,
}

/// A process's descriptors.
pub struct FdTable {
    slots: Vec<Option<Descriptor>>,
}

impl Default for FdTable {
    fn default() -> Self {
        FdTable::new()
    }
}

/// A descriptor number from a system-call argument (`EBADF` if out of range).
pub fn number(fd: u64) -> Result<usize, Errno> {
    let fd = fd as u32 as usize;
    if fd < MAX_FDS {
        Ok(fd)
    } else {
        Err(Errno::EBADF)
    }
}

impl FdTable {
    /// The table a process starts with: stdin, stdout, stderr.
    pub fn new() -> FdTable {
        let console = File::new(FileKind::Console, O_WRONLY);
        let slots = alloc::vec![
            Some(Descriptor {
                file: File::new(FileKind::Stdin, O_RDONLY),
                cloexec: false,
            }),
            Some(Descriptor {
                file: Arc::clone(&console),
                cloexec: false,
            }),
            Some(Descriptor {
                file: console,
                cloexec: false,
            }),
        ];
        FdTable { slots }
    }

    fn slot(&self, fd: usize) -> Option<&Descriptor> {
        self.slots.get(fd).and_then(Option::as_ref)
    }

    /// The file open as `fd` (`EBADF`).
    pub fn get(&self, fd: usize) -> Result<Arc<File>, Errno> {
        self.slot(fd)
            .map(|descriptor| Arc::clone(&descriptor.file))
            .ok_or(Errno::EBADF)
    }

    pub fn cloexec(&self, fd: usize) -> Result<bool, Errno> {
        self.slot(fd)
            .map(|descriptor| descriptor.cloexec)
            .ok_or(Errno::EBADF)
    }

    pub fn set_cloexec(&mut self, fd: usize, cloexec: bool) -> Result<(), Errno> {
        match self.slots.get_mut(fd).and_then(Option::as_mut) {
            Some(descriptor) => {
                descriptor.cloexec = cloexec;
                Ok(())
            }
            None => Err(Errno::EBADF),
        }
    }

    /// Installs `file` at the lowest free number at or above `minimum`
    /// (`EMFILE` when none is left, `EINVAL` for a minimum out of range).
    pub fn install_from(
        &mut self,
        minimum: usize,
        file: Arc<File>,
        cloexec: bool,
    ) -> Result<usize, Errno> {
        if minimum >= MAX_FDS {
            return Err(Errno::EINVAL);
        }
        let free = (minimum..self.slots.len()).find(|&fd| self.slots[fd].is_none());
        let fd = match free {
            Some(fd) => fd,
            None if self.slots.len().max(minimum) < MAX_FDS => {
                let fd = self.slots.len().max(minimum);
                self.slots.resize(fd + 1, None);
                fd
            }
            None => return Err(Errno::EMFILE),
        };
        self.slots[fd] = Some(Descriptor { file, cloexec });
        Ok(fd)
    }

    /// Installs `file` at the lowest free number.
    pub fn install(&mut self, file: Arc<File>, cloexec: bool) -> Result<usize, Errno> {
        self.install_from(0, file, cloexec)
    }

    /// Removes `fd`; returns its file, to be dropped after the table lock.
    pub fn remove(&mut self, fd: usize) -> Result<Arc<File>, Errno> {
        let descriptor = self
            .slots
            .get_mut(fd)
            .and_then(Option::take)
            .ok_or(Errno::EBADF)?;
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        Ok(descriptor.file)
    }

    /// Makes `new` refer to `old`'s file (`dup2`/`dup3`); returns the file
    /// `new` referred to before, to be dropped after the table lock.
    pub fn duplicate_to(
        &mut self,
        old: usize,
        new: usize,
        cloexec: bool,
    ) -> Result<Option<Arc<File>>, Errno> {
        let file = self.get(old)?;
        if new >= MAX_FDS {
            return Err(Errno::EBADF);
        }
        if self.slots.len() <= new {
            self.slots.resize(new + 1, None);
        }
        let previous = self.slots[new].replace(Descriptor { file, cloexec });
        Ok(previous.map(|descriptor| descriptor.file))
    }

    /// Every descriptor's file, leaving the table empty (process teardown).
    pub fn take_all(&mut self) -> Vec<Arc<File>> {
        core::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .map(|descriptor| descriptor.file)
            .collect()
    }

    /// Open descriptors (tests, diagnostics).
    pub fn count(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_some()).count()
    }
}

/// The calling process's file open as `fd`.
pub fn current_file(fd: u64) -> Result<Arc<File>, Errno> {
    let fd = number(fd)?;
    crate::sched::current().process.files.lock().get(fd)
}

/// Installs `file` in the calling process's table at the lowest free number.
pub fn install_current(file: Arc<File>, cloexec: bool) -> Result<usize, Errno> {
    crate::sched::current()
        .process
        .files
        .lock()
        .install(file, cloexec)
}

crate::ktests! {
    fn lowest_free_numbers_and_the_limit() {
        let mut table = FdTable::new();
        let file = File::new(FileKind::Console, O_WRONLY);
        assert_eq!(table.install(Arc::clone(&file), false), Ok(3));
        assert_eq!(table.install(Arc::clone(&file), true), Ok(4));
        assert!(table.remove(3).is_ok());
        assert_eq!(table.remove(3).err(), Some(Errno::EBADF));
        assert_eq!(table.install(Arc::clone(&file), false), Ok(3));
        assert_eq!(table.cloexec(4), Ok(true));
        assert_eq!(table.install_from(10, Arc::clone(&file), false), Ok(10));
        assert_eq!(table.install(Arc::clone(&file), false), Ok(5));
        while table.count() < MAX_FDS {
            table.install(Arc::clone(&file), false).expect("room");
        }
        assert_eq!(table.install(Arc::clone(&file), false).err(), Some(Errno::EMFILE));
        assert!(table.duplicate_to(0, MAX_FDS - 1, false).expect("dup2").is_some());
        assert_eq!(table.duplicate_to(0, MAX_FDS, false).err(), Some(Errno::EBADF));
        assert_eq!(table.take_all().len(), MAX_FDS);
        assert_eq!(table.count(), 0);
    }
}
