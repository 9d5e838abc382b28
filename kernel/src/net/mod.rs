//! The network attachment of the guest process: its virtio-net device, the
//! two rings and their kernel-only worker LWPs, and its smoltcp stack.
//!
//! Owns `NIC` (the virtio-net function found at boot and its interrupt
//! vectors; an `IrqSpinLock`), `IRQ_RINGS` (what the interrupt handlers
//! wake; an `IrqSpinLock`, a leaf) and, per process, `Process::net` (a
//! `Mutex`, taken before the stack and ring locks). Lock order: process
//! `net` → stack → socket state → ring → doorbell; the transport lock is
//! a leaf. Socket calls sleep on wake signals (`wake`), taken after the
//! stack lock.
//!
//! Life of an attachment (docs/network.md): created by the process's
//! first network call (`attach`), which opens the device and inits both
//! rings, each creating its worker inside the process; ended by the
//! process's exit, which the workers notice by themselves: they flush,
//! stop the device, free their rings and exit. The supervisor's teardown
//! then drops the attachment (device reset, vectors released, stack and
//! sockets freed). A ring reset while the process lives (a device error,
//! `detach`) takes the whole attachment down: both rings reach `RESET`,
//! the stack is marked down, and network calls fail with `ENETDOWN`.

pub(crate) mod check;
mod device;
mod hal;
pub mod ring;
pub mod socket;
pub mod stack;
pub(crate) mod tests;
pub mod wake;

use alloc::string::String;
use alloc::sync::Arc;

pub use device::{Device, probe};
use ring::{Ring, RingKind, RingQueue, WorkerContext};
use stack::Ipv4Config;
pub use stack::{Stack, StackInner};

use crate::errno::Errno;
use crate::proc::Process;
use crate::sync::Doorbell;

/// A process's network attachment.
pub struct Attachment {
    pub stack: Arc<Stack>,
    pub device: Arc<Device>,
    /// [rx, tx].
    pub rings: [Arc<Ring>; 2],
}

/// The interface configuration from the kernel command line.
fn configuration() -> Ipv4Config {
    let mut config = Ipv4Config::default();
    let line = crate::cmdline::get();
    if let Some(value) = line.value("net.ip") {
        match parse_cidr(value) {
            Some((address, prefix)) => {
                config.address = address;
                config.prefix = prefix;
            }
            None => log::warn!("net.ip={value} is not A.B.C.D/N: using {}", config.address),
        }
    }
    if let Some(value) = line.value("net.gw") {
        match parse_ipv4(value) {
            Some(gateway) => config.gateway = Some(gateway),
            None if value == "none" => config.gateway = None,
            None => log::warn!("net.gw={value} is not an IPv4 address: ignored"),
        }
    }
    config
}

fn parse_ipv4(text: &str) -> Option<smoltcp::wire::Ipv4Address> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        *octet = parts.next()?.parse().ok()?;
    }
    parts
        .next()
        .is_none()
        .then_some(smoltcp::wire::Ipv4Address::from(octets))
}

fn parse_cidr(text: &str) -> Option<(smoltcp::wire::Ipv4Address, u8)> {
    let (address, prefix) = text.split_once('/').unwrap_or((text, "24"));
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((parse_ipv4(address)?, prefix))
}

/// The process's attachment, created on first use.
pub fn attach(process: &Arc<Process>) -> Result<Arc<Attachment>, Errno> {
    let mut slot = process.net.lock();
    if let Some(attachment) = slot.as_ref() {
        if attachment.stack.is_down() {
            return Err(Errno::ENETDOWN);
        }
        return Ok(Arc::clone(attachment));
    }
    if process.is_exiting() {
        return Err(Errno::ESRCH);
    }
    let attachment = Arc::new(open_on_a_large_stack(process)?);
    *slot = Some(Arc::clone(&attachment));
    Ok(attachment)
}

/// Stack pages for opening the device and building the stack: smoltcp's
/// interface and the virtqueues are built by value, and an unoptimised
/// kernel copies them several times (about 120 KiB in the driver's
/// `open`), far more than a system call's kernel stack holds.
const OPEN_STACK_PAGES: usize = 64;

/// Runs `open` on a kernel thread of its own with a large stack, and
/// waits for it.
fn open_on_a_large_stack(process: &Arc<Process>) -> Result<Attachment, Errno> {
    let result: Arc<crate::sync::Mutex<Option<Result<Attachment, Errno>>>> =
        Arc::new(crate::sync::Mutex::new(None));
    let (target, slot) = (Arc::clone(process), Arc::clone(&result));
    let opener = crate::kthread::Builder::new("vnet0-open")
        .stack_pages(OPEN_STACK_PAGES)
        .joinable()
        .spawn(move || {
            *slot.lock() = Some(open(&target));
        })?;
    crate::kthread::join(&opener)?;
    let outcome = result.lock().take();
    outcome.unwrap_or(Err(Errno::EIO))
}

fn open(process: &Arc<Process>) -> Result<Attachment, Errno> {
    let rx = Arc::new(Ring::new(
        String::from("vnet0-rx0"),
        RingKind::Rx,
        Arc::new(Doorbell::new()),
    ));
    let tx = Arc::new(Ring::new(
        String::from("vnet0-tx0"),
        RingKind::Tx,
        Arc::new(Doorbell::new()),
    ));
    let (device, queues) = device::open([Arc::clone(&rx), Arc::clone(&tx)])?;
    let device = Arc::new(device);
    let stack = Arc::new(Stack::ethernet(
        device.mac,
        configuration(),
        Arc::clone(&tx.doorbell),
    ));
    let context = |ring: &Arc<Ring>, peer: &Arc<Ring>| WorkerContext {
        ring: Arc::clone(ring),
        device: Arc::clone(&device),
        stack: Arc::clone(&stack),
        peer: Arc::clone(peer),
    };
    ring::init(process, context(&tx, &rx), RingQueue::Tx(queues.tx))?;
    if let Err(error) = ring::init(process, context(&rx, &tx), RingQueue::Rx(queues.rx)) {
        tx.reset(1_000_000_000);
        return Err(error);
    }
    tx.request(ring::request::START);
    rx.request(ring::request::START);
    Ok(Attachment {
        stack,
        device,
        rings: [rx, tx],
    })
}

/// Ends the process's attachment from outside: each ring is asked to stop
/// and reaches `RESET` (its worker gone), then the device is reset and the
/// stack dropped. `ETIMEDOUT` if a worker does not finish within 5 s (it
/// may be parked in a stopped process); the attachment is then kept.
pub fn detach(process: &Process) -> Result<(), Errno> {
    let mut slot = process.net.lock();
    let Some(attachment) = slot.as_ref() else {
        return Ok(());
    };
    for ring in &attachment.rings {
        ring.request(ring::request::STOP);
    }
    for ring in &attachment.rings {
        if !ring.wait_for_state(ring::RingState::Reset, 5_000_000_000) {
            return Err(Errno::ETIMEDOUT);
        }
    }
    drop(slot.take());
    Ok(())
}

/// A loopback stack (127.0.0.1/8) polled by a kernel thread of proc0, for
/// kernel tests of the socket layer; made on first use, kept for good.
pub fn loopback_stack() -> Arc<Stack> {
    static LOOPBACK: spin::Once<Arc<Stack>> = spin::Once::new();
    Arc::clone(LOOPBACK.call_once(|| {
        let doorbell = Arc::new(Doorbell::new());
        let stack = Arc::new(Stack::loopback(Arc::clone(&doorbell)));
        let polled = Arc::clone(&stack);
        let started = crate::kthread::Builder::new("netloop").spawn(move || {
            loop {
                let delay = polled.poll();
                let deadline = delay.map(|delay| crate::time::now_ns().saturating_add(delay));
                doorbell.wait(deadline);
            }
        });
        if let Err(error) = started {
            log::warn!("net: no loopback poller: {error}");
        }
        stack
    }))
}
