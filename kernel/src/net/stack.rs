//! The smoltcp stack (stand-in: loopback device only, until the lead's
//! ring-backed stack replaces this file with the same interface).
//!
//! Owns the interface, the socket set and the device (`StackInner`, behind
//! one sleeping mutex, the innermost lock but for socket state), the
//! TCP sockets handed back by the socket layer (`released`), and a polling
//! kernel thread that runs `Interface::poll` whenever kicked and at least
//! every `POLL_INTERVAL_NS`, notifying `polled` after every poll. Lock
//! order: stack → `kick` (the thread's wake-up flag). System calls never
//! poll: they queue or take bytes and `kick`.

use alloc::sync::Arc;
use alloc::vec::Vec;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use crate::errno::Errno;
use crate::proc::lwp::WakeReason;
use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::time;

/// The longest the polling thread sleeps between polls.
const POLL_INTERVAL_NS: u64 = 2_000_000;

/// The stack state: smoltcp interface and sockets.
pub struct StackInner {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    device: Loopback,
    released: Vec<SocketHandle>,
}

struct Shared {
    inner: Mutex<StackInner>,
    polled: Condvar,
    kick: Mutex<bool>,
    kicked: Condvar,
}

/// A network stack and its polling thread.
pub struct Stack {
    shared: Arc<Shared>,
}

fn now() -> Instant {
    Instant::from_micros((time::now_ns() / 1_000) as i64)
}

impl Stack {
    /// A stack over smoltcp's loopback device, 127.0.0.1/8.
    pub fn loopback() -> Result<Stack, Errno> {
        let mut device = Loopback::new(Medium::Ip);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = time::random_u64();
        let mut iface = Interface::new(config, &mut device, now());
        iface.update_ip_addrs(|addresses| {
            let _ = addresses.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
        });
        let shared = Arc::new(Shared {
            inner: Mutex::new(StackInner {
                iface,
                sockets: SocketSet::new(Vec::new()),
                device,
                released: Vec::new(),
            }),
            polled: Condvar::new(),
            kick: Mutex::new(false),
            kicked: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        crate::kthread::Builder::new("net-loopback")
            .spawn(move || poll_loop(worker))
            .map_err(|_| Errno::ENOMEM)?;
        Ok(Stack { shared })
    }

    /// The stack state: smoltcp interface and sockets.
    pub fn lock(&self) -> MutexGuard<'_, StackInner> {
        self.shared.inner.lock()
    }

    /// Asks the polling thread to run the interface soon.
    pub fn kick(&self) {
        *self.shared.kick.lock() = true;
        self.shared.kicked.notify_all();
    }

    /// Releases the guard, sleeps interruptibly until the interface has been
    /// polled again or `deadline_ns` passes; relocks. `Err(ERESTARTSYS)`
    /// when interrupted.
    pub fn wait<'a>(
        &self,
        guard: MutexGuard<'a, StackInner>,
        deadline_ns: Option<u64>,
    ) -> Result<MutexGuard<'a, StackInner>, Errno> {
        let (guard, why) = match deadline_ns {
            None => self.shared.polled.wait_interruptible(guard),
            Some(deadline) => {
                let now = time::now_ns();
                if now >= deadline {
                    return Ok(guard);
                }
                self.shared
                    .polled
                    .wait_timeout_interruptible(guard, deadline - now)
            }
        };
        if why == WakeReason::Interrupted {
            return Err(Errno::ERESTARTSYS);
        }
        Ok(guard)
    }
}

impl StackInner {
    /// Hands a closed TCP socket to the stack: it is removed from the set
    /// once its connection is fully closed.
    pub fn release_tcp(&mut self, handle: SocketHandle) {
        self.released.push(handle);
    }

    fn poll(&mut self) {
        let StackInner {
            iface,
            sockets,
            device,
            released,
        } = self;
        // Each round ingests what the previous one sent over the loopback.
        for _ in 0..4 {
            iface.poll(now(), device, sockets);
        }
        released.retain(|handle| {
            let closed = sockets.get::<tcp::Socket>(*handle).state() == tcp::State::Closed;
            if closed {
                sockets.remove(*handle);
            }
            !closed
        });
    }
}

fn poll_loop(shared: Arc<Shared>) {
    loop {
        let delay = {
            let mut inner = shared.inner.lock();
            inner.poll();
            shared.polled.notify_all();
            let inner = &mut *inner;
            inner
                .iface
                .poll_delay(now(), &inner.sockets)
                .map_or(POLL_INTERVAL_NS, |delay| delay.total_micros() * 1_000)
                .clamp(0, POLL_INTERVAL_NS)
        };
        let mut kick = shared.kick.lock();
        if !*kick && delay > 0 {
            kick = shared.kicked.wait_timeout(kick, delay).0;
        }
        *kick = false;
    }
}
