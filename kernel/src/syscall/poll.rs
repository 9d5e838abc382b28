//! Readiness over every descriptor kind: `poll`, `ppoll`, `select`,
//! `pselect6` and epoll (`epoll_create1`, `epoll_ctl`, `epoll_wait`,
//! `epoll_pwait`, `epoll_pwait2`; level-triggered, `EPOLLET` taken as
//! level).
//!
//! As Linux: the signal mask of `ppoll`/`pselect6`/`epoll_pwait*` is in
//! force for the wait only and comes back when the call ends, or after
//! the handler when a signal ended it (`poll_select_finish`); `select`,
//! `ppoll` and `pselect6` write the time left back to their timeout
//! (not for a zero one); a signal pending with nothing ready ends a
//! `poll`/`select` wait even with a zero timeout (epoll: a zero timeout
//! returns 0 first).
//!
//! Owns the epoll instances (`Epoll`: an interest list keyed by descriptor
//! number, holding files weakly, under a sleeping mutex that is taken
//! inside the stack lock and released before anything else is taken; and
//! a wake signal, notified by `epoll_ctl` adding or changing a socket,
//! under that socket's stack lock). The
//! console is always ready (stdin at end of file, output writable).
//! Sockets (of the first socket's stack) are checked with their stack
//! locked; with nothing ready, the caller arms every socket and nested
//! epoll it looked at (`watch_file`) and sleeps with `Stack::wait`, the
//! lock held throughout, so no change after the check is missed; without
//! sockets nothing can become ready and the call just sleeps out its
//! timeout. Locks: fd table (only to look files up), then stack, then an
//! epoll's interest list or socket state, then wake signals.

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use super::SysResult;
use crate::errno::Errno;
use crate::fd::{self, File, FileKind, O_RDWR};
use crate::mm::usercopy::{check_range, copy_from_user, copy_to_user};
use crate::net::socket::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI, Socket};
use crate::net::wake::{Signal, Watch};
use crate::net::{Stack, StackInner};
use crate::sync::Mutex;
use crate::time;

const EPOLL_CTL_ADD: u64 = 1;
const EPOLL_CTL_DEL: u64 = 2;
const EPOLL_CTL_MOD: u64 = 3;
const EPOLL_CLOEXEC: u64 = 0o2000000;
const EPOLLONESHOT: u32 = 1 << 30;
/// `sizeof(struct epoll_event)` on x86_64 (packed).
const EPOLL_EVENT_SIZE: u64 = 12;
/// The most events one `epoll_wait` returns.
const EPOLL_MAX_EVENTS: i32 = (i32::MAX as u64 / EPOLL_EVENT_SIZE) as i32;

struct Interest {
    file: Weak<File>,
    events: u32,
    data: u64,
}

/// An epoll instance.
pub struct Epoll {
    interest: Mutex<BTreeMap<usize, Interest>>,
    /// Watched by `poll`/`select` calls sleeping on this instance.
    signal: Arc<Signal>,
}

impl Epoll {
    pub fn new() -> Epoll {
        Epoll {
            interest: Mutex::new(BTreeMap::new()),
            signal: Arc::new(Signal::new()),
        }
    }
}

/// The readiness of `file`; `inner` is the locked stack of `locked`.
fn file_events(file: &File, locked: Option<(&Stack, &mut StackInner)>, depth: u32) -> u16 {
    match &file.kind {
        FileKind::Stdin => POLLIN,
        FileKind::Console => POLLOUT,
        FileKind::Socket(socket) => match locked {
            Some((stack, inner)) if core::ptr::eq(stack, socket.stack()) => {
                socket.poll_events_in(inner)
            }
            _ => socket.poll_events(),
        },
        FileKind::Epoll(epoll) if depth == 0 => {
            let entries: Vec<(Arc<File>, u32)> = epoll
                .interest
                .lock()
                .values()
                .filter_map(|entry| entry.file.upgrade().map(|file| (file, entry.events)))
                .collect();
            let mut locked = locked;
            let ready = entries.iter().any(|(file, events)| {
                let relocked = locked.as_mut().map(|(stack, inner)| (*stack, &mut **inner));
                file_events(file, relocked, 1) & (*events as u16 | POLLERR | POLLHUP) != 0
            });
            if ready { POLLIN } else { 0 }
        }
        FileKind::Epoll(_) => 0,
    }
}

/// The first socket among `files`: its stack is the one to wait on.
fn first_socket<'a>(files: impl Iterator<Item = &'a Arc<File>>) -> Option<Arc<Socket>> {
    files.into_iter().find_map(|file| match &file.kind {
        FileKind::Socket(socket) => Some(Arc::clone(socket)),
        _ => None,
    })
}

/// Arms `watch` for what `file_events` looks at on `stack` (locked as
/// `inner`): a socket's changes, a nested epoll's changes and sockets.
fn watch_file(file: &File, stack: &Stack, inner: &mut StackInner, watch: &mut Watch, depth: u32) {
    match &file.kind {
        FileKind::Socket(socket) if core::ptr::eq(stack, socket.stack()) => {
            socket.arm(inner, watch)
        }
        FileKind::Epoll(epoll) if depth == 0 => {
            watch.add(&epoll.signal);
            let files: Vec<Arc<File>> = epoll
                .interest
                .lock()
                .values()
                .filter_map(|entry| entry.file.upgrade())
                .collect();
            for file in files {
                watch_file(&file, stack, inner, watch, 1);
            }
        }
        _ => {}
    }
}

/// Whether a signal (or a stop, or the exit) waits for the caller.
fn signal_pending() -> bool {
    crate::sched::current().interrupt_pending()
}

/// Runs `check` on `files` (with the first socket's stack locked, if
/// any) until it gives something or `deadline` passes (`None` then).
/// `Err(())` when interrupted; with `signals_first` (poll, select) a
/// pending signal interrupts before the deadline is looked at.
fn wait_ready<'a, T>(
    files: impl Iterator<Item = &'a Arc<File>> + Clone,
    deadline: Option<u64>,
    signals_first: bool,
    mut check: impl FnMut(Option<(&Stack, &mut StackInner)>) -> Option<T>,
) -> Result<Option<T>, ()> {
    let expired =
        |deadline: Option<u64>| deadline.is_some_and(|deadline| time::now_ns() >= deadline);
    let Some(socket) = first_socket(files.clone()) else {
        if let Some(result) = check(None) {
            return Ok(Some(result));
        }
        if signals_first && signal_pending() {
            return Err(());
        }
        if expired(deadline) {
            return Ok(None);
        }
        super::time::sleep_until(deadline).map_err(|_| ())?;
        return Ok(check(None));
    };
    let stack = socket.stack();
    let mut watch = Watch::new();
    let mut inner = stack.lock();
    loop {
        if let Some(result) = check(Some((stack, &mut inner))) {
            return Ok(Some(result));
        }
        if signals_first && signal_pending() {
            return Err(());
        }
        if expired(deadline) {
            return Ok(None);
        }
        for file in files.clone() {
            watch_file(file, stack, &mut inner, &mut watch, 0);
        }
        inner = stack.wait(inner, &mut watch, deadline).map_err(|_| ())?;
    }
}

fn deadline_from_ns(timeout: Option<u64>) -> Option<u64> {
    timeout.map(|timeout| time::now_ns().saturating_add(timeout))
}

/// A user timeout of `select`, `ppoll` or `pselect6`: where it is, its
/// format, and the deadline it set (`deadline` 0 for a zero timeout,
/// which is never written back).
struct UserTimeout {
    address: u64,
    micros: bool,
    deadline: u64,
}

impl UserTimeout {
    /// Reads a `timespec` (`micros`: a `timeval`, whose microseconds may
    /// exceed a second, as Linux normalises them). `EFAULT` if
    /// unreadable, `EINVAL` if negative or out of range. None for null.
    fn read(address: u64, micros: bool) -> Result<Option<(UserTimeout, u64)>, Errno> {
        if address == 0 {
            return Ok(None);
        }
        let mut bytes = [0u8; 16];
        copy_from_user(&mut bytes, address)?;
        let seconds = i64::from_le_bytes(bytes[..8].try_into().map_err(|_| Errno::EFAULT)?);
        let fraction = i64::from_le_bytes(bytes[8..].try_into().map_err(|_| Errno::EFAULT)?);
        let (seconds, nanos) = if micros {
            (
                seconds.saturating_add(fraction / 1_000_000),
                (fraction % 1_000_000).saturating_mul(1_000),
            )
        } else {
            (seconds, fraction)
        };
        if seconds < 0 || !(0..1_000_000_000).contains(&nanos) {
            return Err(Errno::EINVAL);
        }
        let timeout = (seconds as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(nanos as u64);
        let deadline = if timeout == 0 {
            0
        } else {
            time::now_ns().saturating_add(timeout)
        };
        let user = UserTimeout {
            address,
            micros,
            deadline,
        };
        Ok(Some((user, timeout)))
    }
}

/// Linux's `poll_select_finish`: the signal mask comes back (after the
/// handler if a signal ended the call), and the time left goes back to a
/// non-zero user timeout. If that write fails the call cannot restart
/// (it would wait anew): `EINTR` instead of the restart code.
fn poll_select_finish(result: SysResult, masked: bool, timeout: Option<UserTimeout>) -> SysResult {
    let interrupted = result == Err(Errno::ERESTARTNOHAND);
    super::signal::end_user_mask(masked, interrupted);
    let Some(timeout) = timeout.filter(|timeout| timeout.deadline != 0) else {
        return result;
    };
    let left = timeout.deadline.saturating_sub(time::now_ns());
    let fraction = if timeout.micros {
        (left % 1_000_000_000) / 1_000
    } else {
        left % 1_000_000_000
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(left / 1_000_000_000).to_le_bytes());
    bytes[8..].copy_from_slice(&fraction.to_le_bytes());
    match copy_to_user(timeout.address, &bytes) {
        Err(_) if interrupted => Err(Errno::EINTR),
        _ => result,
    }
}

fn poll_common(fds: u64, count: u64, deadline: Option<u64>) -> SysResult {
    if count > fd::MAX_FDS as u64 {
        return Err(Errno::EINVAL);
    }
    let mut raw = alloc::vec![0u8; count as usize * 8];
    copy_from_user(&mut raw, fds)?;
    let entries: Vec<(i32, u16)> = raw
        .chunks_exact(8)
        .map(|entry| {
            (
                i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]),
                u16::from_le_bytes([entry[4], entry[5]]),
            )
        })
        .collect();
    let files: Vec<Option<Arc<File>>> = {
        let me = crate::sched::current();
        let table = me.process.files.lock();
        entries
            .iter()
            .map(|&(fd, _)| {
                if fd < 0 {
                    None
                } else {
                    table.get(fd as usize).ok()
                }
            })
            .collect()
    };
    let check = |mut locked: Option<(&Stack, &mut StackInner)>| {
        let mut ready = 0u64;
        let revents: Vec<u16> = entries
            .iter()
            .zip(files.iter())
            .map(|(&(fd, events), file)| {
                let revents = match file {
                    _ if fd < 0 => 0,
                    None => POLLNVAL,
                    Some(file) => {
                        let relocked = locked.as_mut().map(|(stack, inner)| (*stack, &mut **inner));
                        file_events(file, relocked, 0) & (events | POLLERR | POLLHUP)
                    }
                };
                if revents != 0 {
                    ready += 1;
                }
                revents
            })
            .collect();
        (ready > 0).then_some((ready, revents))
    };
    let (ready, revents) = match wait_ready(files.iter().flatten(), deadline, true, check) {
        Ok(Some(result)) => result,
        Ok(None) => (0, alloc::vec![0; entries.len()]),
        Err(()) => return Err(Errno::ERESTARTNOHAND),
    };
    for (index, revents) in revents.iter().enumerate() {
        copy_to_user(fds + index as u64 * 8 + 6, &revents.to_le_bytes())?;
    }
    Ok(ready)
}

pub fn poll(fds: u64, count: u64, timeout_ms: i32) -> SysResult {
    let timeout = (timeout_ms >= 0).then(|| timeout_ms as u64 * 1_000_000);
    match deadline_from_ns(timeout) {
        Some(deadline) => poll_to_deadline(fds, count, deadline),
        None => poll_common(fds, count, None),
    }
}

/// `poll` with a timeout (also `restart_syscall`'s continuation of one):
/// interrupted, it ends with `ERESTART_RESTARTBLOCK`, so it continues to
/// the same deadline unless a handler ran (then `EINTR`), as Linux's
/// `do_restart_poll`.
pub fn poll_to_deadline(fds: u64, count: u64, deadline: u64) -> SysResult {
    match poll_common(fds, count, Some(deadline)) {
        Err(Errno::ERESTARTNOHAND) => {
            let restart = crate::signal::Restart::Poll {
                fds,
                count,
                deadline,
            };
            crate::signal::set_restart(&crate::sched::current(), restart);
            Err(Errno::ERESTART_RESTARTBLOCK)
        }
        other => other,
    }
}

/// `ppoll(fds, nfds, timeout, sigmask, sigsetsize)`.
pub fn ppoll(fds: u64, count: u64, timeout: u64, mask: u64, set_size: u64) -> SysResult {
    let (timeout, ns) = UserTimeout::read(timeout, false)?.unzip();
    let deadline = deadline_from_ns(ns);
    let masked = super::signal::set_user_mask(mask, set_size)?;
    let result = poll_common(fds, count, deadline);
    poll_select_finish(result, masked, timeout)
}

fn read_set(address: u64, words: usize) -> Result<Vec<u64>, Errno> {
    if address == 0 {
        return Ok(alloc::vec![0; words]);
    }
    let mut bytes = alloc::vec![0u8; words * 8];
    copy_from_user(&mut bytes, address)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|word| u64::from_le_bytes(word.try_into().unwrap_or([0; 8])))
        .collect())
}

fn write_set(address: u64, set: &[u64], nfds: usize) -> Result<(), Errno> {
    if address == 0 {
        return Ok(());
    }
    let bytes: Vec<u8> = set.iter().flat_map(|word| word.to_le_bytes()).collect();
    copy_to_user(address, &bytes[..nfds.div_ceil(8)])
}

/// `select`/`pselect6` until `deadline` (None: forever): the count.
fn select_common(
    nfds: u64,
    read: u64,
    write: u64,
    except: u64,
    deadline: Option<u64>,
) -> SysResult {
    let nfds = nfds as i32;
    if nfds < 0 {
        return Err(Errno::EINVAL);
    }
    let nfds = (nfds as usize).min(fd::MAX_FDS);
    let words = nfds.div_ceil(64);
    let sets = [
        read_set(read, words)?,
        read_set(write, words)?,
        read_set(except, words)?,
    ];
    let wanted: Vec<usize> = (0..nfds)
        .filter(|&fd| sets.iter().any(|set| set[fd / 64] & (1 << (fd % 64)) != 0))
        .collect();
    let files: Vec<Arc<File>> = {
        let me = crate::sched::current();
        let table = me.process.files.lock();
        wanted
            .iter()
            .map(|&fd| table.get(fd))
            .collect::<Result<_, _>>()?
    };
    let check = |mut locked: Option<(&Stack, &mut StackInner)>| {
        let mut out = [
            alloc::vec![0u64; words],
            alloc::vec![0u64; words],
            alloc::vec![0u64; words],
        ];
        let mut count = 0;
        for (&fd, file) in wanted.iter().zip(files.iter()) {
            let relocked = locked.as_mut().map(|(stack, inner)| (*stack, &mut **inner));
            let events = file_events(file, relocked, 0);
            let bit = 1u64 << (fd % 64);
            let hits = [
                events & (POLLIN | POLLHUP | POLLERR) != 0,
                events & (POLLOUT | POLLERR) != 0,
                events & POLLPRI != 0,
            ];
            for (which, hit) in hits.iter().enumerate() {
                if *hit && sets[which][fd / 64] & bit != 0 {
                    out[which][fd / 64] |= bit;
                    count += 1;
                }
            }
        }
        (count > 0).then_some((count, out))
    };
    let (count, out) = match wait_ready(files.iter(), deadline, true, check) {
        Ok(Some(result)) => result,
        Ok(None) => (
            0,
            [
                alloc::vec![0; words],
                alloc::vec![0; words],
                alloc::vec![0; words],
            ],
        ),
        Err(()) => return Err(Errno::ERESTARTNOHAND),
    };
    write_set(read, &out[0], nfds)?;
    write_set(write, &out[1], nfds)?;
    write_set(except, &out[2], nfds)?;
    Ok(count)
}

pub fn select(nfds: u64, read: u64, write: u64, except: u64, timeval: u64) -> SysResult {
    let (timeout, ns) = UserTimeout::read(timeval, true)?.unzip();
    let result = select_common(nfds, read, write, except, deadline_from_ns(ns));
    poll_select_finish(result, false, timeout)
}

/// `pselect6(nfds, read, write, except, timeout, sig)`: `sig` points to
/// `{ const sigset_t *ss; size_t ss_len; }` (read first, as Linux does).
pub fn pselect6(
    nfds: u64,
    read: u64,
    write: u64,
    except: u64,
    timespec: u64,
    sig: u64,
) -> SysResult {
    let (mask, set_size) = if sig == 0 {
        (0, 0)
    } else {
        let mut bytes = [0u8; 16];
        copy_from_user(&mut bytes, sig)?;
        (
            u64::from_le_bytes(bytes[..8].try_into().map_err(|_| Errno::EFAULT)?),
            u64::from_le_bytes(bytes[8..].try_into().map_err(|_| Errno::EFAULT)?),
        )
    };
    let (timeout, ns) = UserTimeout::read(timespec, false)?.unzip();
    let deadline = deadline_from_ns(ns);
    let masked = super::signal::set_user_mask(mask, set_size)?;
    let result = select_common(nfds, read, write, except, deadline);
    poll_select_finish(result, masked, timeout)
}

pub fn epoll_create1(flags: u64) -> SysResult {
    if flags & !EPOLL_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    let file = File::new(FileKind::Epoll(Arc::new(Epoll::new())), O_RDWR);
    Ok(fd::install_current(file, flags & EPOLL_CLOEXEC != 0)? as u64)
}

pub fn epoll_create(size: u64) -> SysResult {
    if size as i32 <= 0 {
        return Err(Errno::EINVAL);
    }
    epoll_create1(0)
}

fn epoll_of(file: &File) -> Result<&Arc<Epoll>, Errno> {
    match &file.kind {
        FileKind::Epoll(epoll) => Ok(epoll),
        _ => Err(Errno::EINVAL),
    }
}

pub fn epoll_ctl(epfd: u64, op: u64, target: u64, event: u64) -> SysResult {
    let epoll_file = fd::current_file(epfd)?;
    let file = fd::current_file(target)?;
    let epoll = epoll_of(&epoll_file)?;
    let number = fd::number(target)?;
    if Arc::ptr_eq(&epoll_file, &file) {
        return Err(Errno::EINVAL);
    }
    let read_event = || -> Result<(u32, u64), Errno> {
        let mut bytes = [0u8; 12];
        copy_from_user(&mut bytes, event)?;
        Ok((
            u32::from_le_bytes(bytes[..4].try_into().map_err(|_| Errno::EFAULT)?),
            u64::from_le_bytes(bytes[4..].try_into().map_err(|_| Errno::EFAULT)?),
        ))
    };
    let mut interest = epoll.interest.lock();
    // An entry whose file was closed (and maybe the number reused) is gone.
    if interest.get(&number).is_some_and(|entry| {
        !entry
            .file
            .upgrade()
            .is_some_and(|old| Arc::ptr_eq(&old, &file))
    }) {
        interest.remove(&number);
    }
    match op {
        EPOLL_CTL_ADD => {
            if interest.contains_key(&number) {
                return Err(Errno::EEXIST);
            }
            let (events, data) = read_event()?;
            interest.insert(
                number,
                Interest {
                    file: Arc::downgrade(&file),
                    events,
                    data,
                },
            );
        }
        EPOLL_CTL_MOD => {
            let (events, data) = read_event()?;
            let entry = interest.get_mut(&number).ok_or(Errno::ENOENT)?;
            entry.events = events;
            entry.data = data;
        }
        EPOLL_CTL_DEL => {
            interest.remove(&number).ok_or(Errno::ENOENT)?;
        }
        _ => return Err(Errno::EINVAL),
    }
    drop(interest);
    // A poll or select sleeping on this instance looks again (a socket
    // it did not arm may be ready): notified under the socket's stack
    // lock, which it holds from its check to its sleep.
    if let FileKind::Socket(socket) = &file.kind
        && op != EPOLL_CTL_DEL
    {
        let _inner = socket.stack().lock();
        epoll.signal.notify();
    }
    Ok(0)
}

/// A millisecond epoll timeout (negative: forever).
fn epoll_timeout_ms(timeout_ms: u64) -> Option<u64> {
    let timeout_ms = timeout_ms as i32;
    (timeout_ms >= 0).then(|| timeout_ms as u64 * 1_000_000)
}

pub fn epoll_wait(epfd: u64, events: u64, max_events: u64, timeout_ms: u64) -> SysResult {
    epoll_wait_until(epfd, events, max_events, epoll_timeout_ms(timeout_ms))
}

/// `epoll_pwait(epfd, events, maxevents, timeout_ms, sigmask, sigsetsize)`.
pub fn epoll_pwait(
    epfd: u64,
    events: u64,
    max_events: u64,
    timeout_ms: u64,
    mask: u64,
    set_size: u64,
) -> SysResult {
    let masked = super::signal::set_user_mask(mask, set_size)?;
    let result = epoll_wait_until(epfd, events, max_events, epoll_timeout_ms(timeout_ms));
    super::signal::end_user_mask(masked, result == Err(Errno::EINTR));
    result
}

/// `epoll_pwait2`: `epoll_pwait` with a `timespec` timeout (null: forever),
/// which is not written back.
pub fn epoll_pwait2(
    epfd: u64,
    events: u64,
    max_events: u64,
    timeout: u64,
    mask: u64,
    set_size: u64,
) -> SysResult {
    let (_, ns) = UserTimeout::read(timeout, false)?.unzip();
    let masked = super::signal::set_user_mask(mask, set_size)?;
    let result = epoll_wait_until(epfd, events, max_events, ns);
    super::signal::end_user_mask(masked, result == Err(Errno::EINTR));
    result
}

/// `epoll_wait` with a timeout in nanoseconds (None: forever); a signal
/// ends it with `EINTR`, never a restart (as Linux's `ep_poll`).
fn epoll_wait_until(epfd: u64, events: u64, max_events: u64, timeout: Option<u64>) -> SysResult {
    let max_events = max_events as i32;
    if max_events <= 0 || max_events > EPOLL_MAX_EVENTS {
        return Err(Errno::EINVAL);
    }
    check_range(events, max_events as usize * EPOLL_EVENT_SIZE as usize)?;
    let epoll_file = fd::current_file(epfd)?;
    let epoll = Arc::clone(epoll_of(&epoll_file)?);
    let deadline = deadline_from_ns(timeout);
    let entries: Vec<(usize, Arc<File>, u32, u64)> = {
        let mut interest = epoll.interest.lock();
        interest.retain(|_, entry| entry.file.strong_count() > 0);
        interest
            .iter()
            .filter_map(|(&fd, entry)| {
                entry
                    .file
                    .upgrade()
                    .map(|file| (fd, file, entry.events, entry.data))
            })
            .collect()
    };
    let check = |mut locked: Option<(&Stack, &mut StackInner)>| {
        let mut ready = Vec::new();
        for (fd, file, wanted, data) in &entries {
            if ready.len() >= max_events as usize {
                break;
            }
            let relocked = locked.as_mut().map(|(stack, inner)| (*stack, &mut **inner));
            let events = u32::from(file_events(file, relocked, 0))
                & (*wanted | u32::from(POLLERR | POLLHUP));
            if events != 0 && *wanted & !EPOLLONESHOT != 0 {
                ready.push((*fd, events, *data, *wanted));
            }
        }
        (!ready.is_empty()).then_some(ready)
    };
    let files = entries.iter().map(|(_, file, _, _)| file);
    let ready = match wait_ready(files, deadline, false, check) {
        Ok(Some(ready)) => ready,
        Ok(None) => Vec::new(),
        Err(()) => return Err(Errno::EINTR),
    };
    {
        // One-shot entries are disarmed once reported.
        let mut interest = epoll.interest.lock();
        for (fd, _, _, wanted) in &ready {
            if wanted & EPOLLONESHOT != 0
                && let Some(entry) = interest.get_mut(fd)
            {
                entry.events = EPOLLONESHOT;
            }
        }
    }
    for (index, (_, revents, data, _)) in ready.iter().enumerate() {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&revents.to_le_bytes());
        bytes[4..].copy_from_slice(&data.to_le_bytes());
        copy_to_user(events + index as u64 * EPOLL_EVENT_SIZE, &bytes)?;
    }
    Ok(ready.len() as u64)
}
