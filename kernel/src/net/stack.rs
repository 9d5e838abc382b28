//! The network stack of one attachment: a smoltcp `Interface` and its
//! `SocketSet`, and the frame queues between the stack and the rings.
//!
//! Owns `inner` (a sleeping `Mutex`, before the socket-state locks and the
//! ring locks) with the interface, the sockets, the received frames the
//! RX worker queued (`rx`) and the frames the stack produced for the TX
//! worker (`tx`), both bounded (excess is counted and dropped, as a full
//! NIC queue drops). Socket calls sleep (`wait`) on their own condvars,
//! woken by the signals of the sockets they watch (`super::wake`: smoltcp
//! wakes them from inside a poll or a socket call, always under `inner`)
//! and by the stack's own `signal`, which `go_down` notifies to end every
//! sleep for good with `ENETDOWN`. The wakes of a worker's poll wait for
//! its end (`batch`). `kick` rings the
//! doorbell of the worker that polls for socket calls (the TX worker, or
//! the loopback poller). System calls never poll: only workers do.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use super::wake::{Batch, Signal, Watch};
use crate::errno::Errno;
use crate::proc::lwp::WakeReason;
use crate::sync::{Doorbell, Mutex, MutexGuard};
use crate::time;

/// Frames waiting in each direction before new ones are dropped.
const QUEUE_LIMIT: usize = 1024;
/// How long a closed TCP socket may linger to finish its close.
const LINGER_NS: u64 = 60_000_000_000;
pub const MTU: usize = 1500;

/// The IPv4 configuration of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Config {
    pub address: Ipv4Address,
    pub prefix: u8,
    pub gateway: Option<Ipv4Address>,
}

impl Default for Ipv4Config {
    /// QEMU user networking's defaults.
    fn default() -> Self {
        Ipv4Config {
            address: Ipv4Address::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
        }
    }
}

/// Frames between the rings and the stack, with drop counters.
#[derive(Default)]
pub struct FrameQueues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    /// Loopback: what the stack sends comes back in.
    loopback: bool,
    /// Frames the stack sent while `tx` was full, not yet counted by the
    /// TX ring (`take_tx_dropped`).
    tx_dropped: u64,
}

impl FrameQueues {
    /// Queues a received frame for the stack; `false` if it was dropped.
    pub fn push_received(&mut self, frame: Vec<u8>) -> bool {
        if self.rx.len() >= QUEUE_LIMIT {
            return false;
        }
        self.rx.push_back(frame);
        true
    }

    /// Up to `count` of the frames the stack wants sent, oldest first.
    pub fn take_outgoing(&mut self, count: usize) -> Vec<Vec<u8>> {
        let count = count.min(self.tx.len());
        self.tx.drain(..count).collect()
    }

    /// Puts back frames the ring had no room for (they go out first).
    pub fn return_outgoing(&mut self, frames: Vec<Vec<u8>>) {
        for frame in frames.into_iter().rev() {
            self.tx.push_front(frame);
        }
    }

    /// The frames dropped for want of room in the outgoing queue since
    /// the last call (the TX ring counts them as its drops).
    pub fn take_tx_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.tx_dropped)
    }

    pub fn outgoing(&self) -> usize {
        self.tx.len()
    }

    pub fn received(&self) -> usize {
        self.rx.len()
    }
}

struct FrameDevice<'a> {
    queues: &'a mut FrameQueues,
    medium: Medium,
}

pub struct ReceivedFrame(Vec<u8>);
pub struct OutgoingFrame<'a>(&'a mut FrameQueues);

impl smoltcp::phy::RxToken for ReceivedFrame {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for OutgoingFrame<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let result = f(&mut frame);
        let queues = self.0;
        if queues.loopback {
            queues.rx.push_back(frame);
        } else if queues.tx.len() < QUEUE_LIMIT {
            queues.tx.push_back(frame);
        } else {
            queues.tx_dropped += 1;
        }
        result
    }
}

impl Device for FrameDevice<'_> {
    type RxToken<'a>
        = ReceivedFrame
    where
        Self: 'a;
    type TxToken<'a>
        = OutgoingFrame<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(ReceivedFrame, OutgoingFrame<'_>)> {
        let frame = self.queues.rx.pop_front()?;
        Some((ReceivedFrame(frame), OutgoingFrame(self.queues)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<OutgoingFrame<'_>> {
        (self.queues.loopback || self.queues.tx.len() < QUEUE_LIMIT)
            .then_some(OutgoingFrame(self.queues))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = self.medium;
        if self.medium == Medium::Ethernet {
            // The RX worker verified every checksum (`net::check`).
            capabilities.checksum = super::check::checksum_capabilities();
        }
        capabilities.max_transmission_unit = match self.medium {
            Medium::Ethernet => MTU + 14,
            _ => MTU,
        };
        capabilities
    }
}

/// smoltcp's clock: the monotonic clock in microseconds.
pub fn now() -> Instant {
    Instant::from_micros((time::now_ns() / 1000) as i64)
}

pub struct StackInner {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub frames: FrameQueues,
    medium: Medium,
    /// Closed TCP sockets finishing their close, with a deadline.
    closing: Vec<(SocketHandle, u64)>,
}

impl StackInner {
    /// Hands a closed TCP socket to the stack: it leaves the set once its
    /// connection is fully closed, or after `LINGER_NS` (then aborted).
    pub fn release_tcp(&mut self, handle: SocketHandle) {
        self.closing.push((handle, time::now_ns() + LINGER_NS));
    }

    /// Runs the interface once (smoltcp wakes the sockets that changed).
    fn poll(&mut self) {
        let mut device = FrameDevice {
            queues: &mut self.frames,
            medium: self.medium,
        };
        // The loopback device feeds its own output back: run until quiet.
        for _ in 0..64 {
            self.iface.poll(now(), &mut device, &mut self.sockets);
            if !device.queues.loopback || device.queues.rx.is_empty() {
                break;
            }
        }
        self.reap_closed();
    }

    fn reap_closed(&mut self) {
        let now = time::now_ns();
        let sockets = &mut self.sockets;
        self.closing.retain(|&(handle, deadline)| {
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            if socket.state() == tcp::State::Closed {
                sockets.remove(handle);
                false
            } else if now >= deadline {
                socket.abort();
                true
            } else {
                true
            }
        });
    }

    /// The process is exiting: as Linux closes its sockets, a connection
    /// with unread data is reset, every other one closed (a FIN after what
    /// is queued), and listeners dropped.
    pub fn close_all_tcp_for_exit(&mut self) {
        for (_, socket) in self.sockets.iter_mut() {
            if let smoltcp::socket::Socket::Tcp(tcp) = socket {
                if tcp.recv_queue() > 0 || tcp.state() == tcp::State::Listen {
                    tcp.abort();
                } else {
                    tcp.close();
                }
            }
        }
    }

    /// Whether a TCP connection still has data or its FIN unacknowledged
    /// (what `close_all_tcp_for_exit` waits for).
    pub fn tcp_still_closing(&self) -> bool {
        use tcp::State;
        self.sockets.iter().any(|(_, socket)| match socket {
            smoltcp::socket::Socket::Tcp(tcp) => !matches!(
                tcp.state(),
                State::Closed | State::Listen | State::FinWait2 | State::TimeWait
            ),
            _ => false,
        })
    }

    /// Aborts every TCP connection (peers get a reset on the next poll).
    pub fn abort_all_tcp(&mut self) {
        for (_, socket) in self.sockets.iter_mut() {
            if let smoltcp::socket::Socket::Tcp(tcp) = socket {
                tcp.abort();
            }
        }
    }

    /// Nanoseconds until the interface wants polling again (`None`: only
    /// when something arrives).
    pub fn poll_delay_ns(&mut self) -> Option<u64> {
        let delay = self.iface.poll_delay(now(), &self.sockets)?;
        Some(delay.total_micros().saturating_mul(1000))
    }
}

pub struct Stack {
    inner: Mutex<StackInner>,
    /// Every sleeping socket call watches it: `go_down` notifies it.
    signal: Arc<Signal>,
    /// The wakes of a poll, delivered at its end.
    batch: Arc<Batch>,
    /// Set (under `inner`) when the device went down under a live process
    /// (a ring reset outside exit): waits end with `ENETDOWN`.
    down: AtomicBool,
    /// The doorbell of the worker that polls for socket calls.
    poller: Arc<Doorbell>,
}

impl Stack {
    /// An Ethernet stack with `config`, for the NIC with `mac`.
    pub fn ethernet(mac: [u8; 6], config: Ipv4Config, poller: Arc<Doorbell>) -> Stack {
        let hardware = HardwareAddress::Ethernet(EthernetAddress(mac));
        Stack::new(hardware, Medium::Ethernet, false, poller, |iface| {
            iface.update_ip_addrs(|addresses| {
                let _ = addresses.push(IpCidr::new(IpAddress::Ipv4(config.address), config.prefix));
            });
            if let Some(gateway) = config.gateway {
                let _ = iface.routes_mut().add_default_ipv4_route(gateway);
            }
        })
    }

    /// A loopback stack (127.0.0.1/8), for kernel tests of the socket
    /// layer.
    pub fn loopback(poller: Arc<Doorbell>) -> Stack {
        Stack::new(HardwareAddress::Ip, Medium::Ip, true, poller, |iface| {
            iface.update_ip_addrs(|addresses| {
                let _ = addresses.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            });
        })
    }

    fn new(
        hardware: HardwareAddress,
        medium: Medium,
        loopback: bool,
        poller: Arc<Doorbell>,
        configure: impl FnOnce(&mut Interface),
    ) -> Stack {
        let mut frames = FrameQueues {
            loopback,
            ..FrameQueues::default()
        };
        let mut config = Config::new(hardware);
        config.random_seed = crate::arch::read_tsc();
        let mut device = FrameDevice {
            queues: &mut frames,
            medium,
        };
        let mut iface = Interface::new(config, &mut device, now());
        configure(&mut iface);
        Stack {
            inner: Mutex::new(StackInner {
                iface,
                sockets: SocketSet::new(Vec::new()),
                frames,
                medium,
                closing: Vec::new(),
            }),
            signal: Arc::new(Signal::new()),
            batch: Arc::new(Batch::new()),
            down: AtomicBool::new(false),
            poller,
        }
    }

    /// The batch its sockets' signals are woken through.
    pub fn batch(&self) -> &Arc<Batch> {
        &self.batch
    }

    pub fn lock(&self) -> MutexGuard<'_, StackInner> {
        self.inner.lock()
    }

    /// Asks the polling worker to run the interface soon.
    pub fn kick(&self) {
        self.poller.ring();
    }

    /// The device is gone: no worker polls this stack any more.
    pub fn go_down(&self) {
        let _inner = self.inner.lock();
        self.down.store(true, Ordering::Release);
        self.signal.notify();
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Releases `guard`, sleeps interruptibly until a signal `watch` is on
    /// is notified (the caller armed it for what it waits for, with
    /// `guard` held since its check), the stack goes down, or
    /// `deadline_ns` (monotonic) passes; relocks. `Err(ERESTARTSYS)` when
    /// interrupted, `Err(ENETDOWN)` when the stack is down (`go_down`).
    #[track_caller]
    pub fn wait<'a>(
        &self,
        guard: MutexGuard<'a, StackInner>,
        watch: &mut Watch,
        deadline_ns: Option<u64>,
    ) -> Result<MutexGuard<'a, StackInner>, Errno> {
        if self.is_down() {
            return Err(Errno::ENETDOWN);
        }
        watch.add(&self.signal);
        let condvar = &watch.waiter().condvar;
        let (guard, why) = match deadline_ns {
            Some(deadline) => {
                let left = deadline.saturating_sub(time::now_ns());
                if left == 0 {
                    return Ok(guard);
                }
                condvar.wait_timeout_interruptible(guard, left)
            }
            None => condvar.wait_interruptible(guard),
        };
        if why == WakeReason::Interrupted {
            return Err(Errno::ERESTARTSYS);
        }
        if self.is_down() {
            return Err(Errno::ENETDOWN);
        }
        Ok(guard)
    }

    /// Polls the interface (workers only); the sockets that changed wake
    /// their callers. Returns the poll delay the interface asks for.
    pub fn poll(&self) -> Option<u64> {
        let mut inner = self.inner.lock();
        self.batch.begin();
        inner.poll();
        self.batch.end();
        inner.poll_delay_ns()
    }

    /// Runs `f` on the frame queues (the rings' side).
    pub fn with_frames<R>(&self, f: impl FnOnce(&mut FrameQueues) -> R) -> R {
        f(&mut self.inner.lock().frames)
    }
}
