//! The virtio-net PCI function: found at boot (`probe`), opened for an
//! attachment (`open`), reset when the attachment ends.
//!
//! Owns `NIC` (the function found at boot), `NIC_BUSY` (an attachment
//! holds the device), `IRQ_RINGS` (the rings the interrupt handlers wake:
//! an `IrqSpinLock`, a leaf) and `INTX_ISR` (the ISR register read by the
//! legacy-interrupt handler). Interrupt handlers only acknowledge and ring
//! a worker's doorbell. MSI-X: vector 0 for RX, 1 for TX; without MSI-X,
//! one INTx line through the I/O APIC wakes both rings.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spindle_drivers::virtio_net::{self, NetQueues};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::DeviceFunction;
use virtio_drivers::transport::{DeviceStatus, Transport};

use super::hal::{self, KernelHal};
use super::ring::Ring;
use crate::errno::Errno;
use crate::sync::IrqSpinLock;

#[derive(Clone, Copy)]
struct Nic {
    function: DeviceFunction,
}

static NIC: IrqSpinLock<Option<Nic>> = IrqSpinLock::new(None);
static NIC_BUSY: AtomicBool = AtomicBool::new(false);
static IRQ_RINGS: IrqSpinLock<[Option<Arc<Ring>>; 2]> = IrqSpinLock::new([None, None]);
/// Virtual address of the ISR status byte while INTx is in use (0: none).
static INTX_ISR: AtomicU64 = AtomicU64::new(0);

const VIRTIO_VENDOR: u16 = 0x1af4;
const VIRTIO_NET_MODERN: u16 = 0x1041;
const VIRTIO_NET_TRANSITIONAL: u16 = 0x1000;
/// `VIRTIO_MSI_NO_VECTOR`.
const NO_VECTOR: u16 = 0xffff;

/// Finds the virtio-net function (after `dev::pci::init`); returns whether
/// there is one.
pub fn probe() -> bool {
    let found = crate::dev::pci::devices().into_iter().find(|device| {
        device.vendor_id == VIRTIO_VENDOR
            && (device.device_id == VIRTIO_NET_MODERN
                || device.device_id == VIRTIO_NET_TRANSITIONAL)
    });
    let Some(device) = found else {
        return false;
    };
    log::info!(
        "net: virtio-net at {:02x}:{:02x}.{}",
        device.function.bus,
        device.function.device,
        device.function.function
    );
    *NIC.lock() = Some(Nic {
        function: device.function,
    });
    true
}

/// How the device interrupts.
enum Interrupts {
    /// MSI-X vectors for [rx, tx].
    Msix([u8; 2]),
    /// One INTx line (`gsi`) on `vector`.
    Intx { gsi: u32, vector: u8 },
}

/// The open device: its transport under a leaf lock.
pub struct Device {
    transport: IrqSpinLock<PciTransport>,
    live: AtomicBool,
    pub mac: [u8; 6],
    function: DeviceFunction,
    interrupts: Interrupts,
}

impl Device {
    /// Tells the device about new buffers in `queue` (not once stopped).
    pub fn notify(&self, queue: u16) {
        let mut transport = self.transport.lock();
        if self.live.load(Ordering::Acquire) {
            transport.notify(queue);
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Stops the device (a reset): it touches no buffer afterwards.
    /// Idempotent.
    pub fn stop(&self) {
        let mut transport = self.transport.lock();
        if self.live.swap(false, Ordering::AcqRel) {
            transport.set_status(DeviceStatus::empty());
        }
    }

    /// "msix" or "intx", for `ctl rings`.
    pub fn interrupt_kind(&self) -> &'static str {
        match self.interrupts {
            Interrupts::Msix(_) => "msix",
            Interrupts::Intx { .. } => "intx",
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
        release_interrupts(self.function, &self.interrupts);
        NIC_BUSY.store(false, Ordering::Release);
    }
}

fn release_interrupts(function: DeviceFunction, interrupts: &Interrupts) {
    match *interrupts {
        Interrupts::Msix(vectors) => {
            crate::dev::pci::disable_msix(function);
            for vector in vectors {
                crate::arch::irq::unregister(vector);
            }
        }
        Interrupts::Intx { gsi, vector } => {
            let _ = crate::arch::irq::unroute_gsi(gsi);
            crate::arch::irq::unregister(vector);
            INTX_ISR.store(0, Ordering::Release);
        }
    }
    *IRQ_RINGS.lock() = [None, None];
}

fn on_ring_interrupt(index: usize) {
    if let Some(ring) = IRQ_RINGS.lock()[index & 1].as_ref() {
        ring.on_interrupt();
    }
}

fn on_intx(_: usize) {
    let isr = INTX_ISR.load(Ordering::Acquire);
    // Reading the ISR byte acknowledges (and lowers) the line.
    if isr == 0 || hal::mmio_read_u8(isr) & 1 == 0 {
        return;
    }
    for ring in IRQ_RINGS.lock().iter().flatten() {
        ring.on_interrupt();
    }
}

/// Where the virtio PCI capabilities put the common configuration and
/// the ISR byte (physical addresses).
struct VirtioRegisters {
    common: u64,
    isr: u64,
}

const VIRTIO_CAP_COMMON: u8 = 1;
const VIRTIO_CAP_ISR: u8 = 3;
const CAP_VENDOR: u8 = 0x09;

fn virtio_registers(function: DeviceFunction) -> Option<VirtioRegisters> {
    use crate::dev::pci;
    let mut common = None;
    let mut isr = None;
    let capabilities: Vec<_> = pci::with_root(|root| root.capabilities(function).collect());
    for capability in capabilities {
        if capability.id != CAP_VENDOR {
            continue;
        }
        let cfg_type = (capability.private_header >> 8) as u8;
        if cfg_type != VIRTIO_CAP_COMMON && cfg_type != VIRTIO_CAP_ISR {
            continue;
        }
        let bar = (pci::read_config(function, capability.offset + 4) & 0xff) as u8;
        let offset = u64::from(pci::read_config(function, capability.offset + 8));
        let base = pci::with_root(|root| root.bar_info(function, bar).ok().flatten())
            .and_then(|info| info.memory_address_size())
            .map(|(address, _)| address);
        let Some(base) = base else {
            continue;
        };
        match cfg_type {
            VIRTIO_CAP_COMMON => common = Some(base + offset),
            VIRTIO_CAP_ISR => isr = Some(base + offset),
            _ => {}
        }
    }
    Some(VirtioRegisters {
        common: common?,
        isr: isr?,
    })
}

/// Common-configuration offsets (virtio 1.x, 4.1.4.3).
const COMMON_MSIX_CONFIG: u64 = 0x10;
const COMMON_QUEUE_SELECT: u64 = 0x16;
const COMMON_QUEUE_MSIX_VECTOR: u64 = 0x1a;

/// Points queue `queue` at MSI-X table entry `entry`; `false` if the
/// device refused (it reads back `NO_VECTOR`).
fn set_queue_vector(common: u64, queue: u16, entry: u16) -> bool {
    let common = crate::mm::phys_to_virt(common);
    hal::mmio_write_u16(common + COMMON_QUEUE_SELECT, queue);
    hal::mmio_write_u16(common + COMMON_QUEUE_MSIX_VECTOR, entry);
    hal::mmio_read_u16(common + COMMON_QUEUE_MSIX_VECTOR) == entry
}

/// Opens the device for a new attachment whose rings are `rings`
/// ([rx, tx]): reset, negotiation, both queues, interrupt vectors,
/// `DRIVER_OK`.
pub fn open(rings: [Arc<Ring>; 2]) -> Result<(Device, NetQueues<KernelHal>), Errno> {
    let nic = (*NIC.lock()).ok_or(Errno::ENETDOWN)?;
    if NIC_BUSY.swap(true, Ordering::AcqRel) {
        return Err(Errno::EBUSY);
    }
    let opened = open_locked(nic, rings);
    if opened.is_err() {
        NIC_BUSY.store(false, Ordering::Release);
    }
    opened
}

fn open_locked(nic: Nic, rings: [Arc<Ring>; 2]) -> Result<(Device, NetQueues<KernelHal>), Errno> {
    let function = nic.function;
    let registers = virtio_registers(function).ok_or_else(|| {
        log::warn!("net: the virtio-net function has no common configuration");
        Errno::ENODEV
    })?;
    let mut transport =
        crate::dev::pci::with_root(|root| PciTransport::new::<KernelHal, _>(root, function))
            .map_err(|error| {
                log::warn!("net: virtio transport: {error:?}");
                Errno::EIO
            })?;
    *IRQ_RINGS.lock() = [Some(Arc::clone(&rings[0])), Some(Arc::clone(&rings[1]))];
    let force_intx = crate::cmdline::get().value("net.irq") == Some("intx");
    let msix = if force_intx {
        Err("net.irq=intx")
    } else {
        setup_msix(function)
    };
    let interrupts = match msix {
        Ok(vectors) => Interrupts::Msix(vectors),
        Err(why) => {
            log::info!("net: no MSI-X ({why}); using INTx");
            setup_intx(function, registers.isr)?
        }
    };
    let msix = matches!(interrupts, Interrupts::Msix(_));
    // MSI-X table entry 0 for RX, 1 for TX, none for configuration
    // changes; each queue's before it is enabled.
    let assign_vector = |queue: u16| {
        if !msix {
            return true;
        }
        if queue == virtio_net::RX_QUEUE {
            let common = crate::mm::phys_to_virt(registers.common);
            hal::mmio_write_u16(common + COMMON_MSIX_CONFIG, NO_VECTOR);
        }
        let entry = if queue == virtio_net::RX_QUEUE { 0 } else { 1 };
        set_queue_vector(registers.common, queue, entry)
    };
    let (identity, queues) = match virtio_net::open::<KernelHal, _>(&mut transport, assign_vector) {
        Ok(opened) => opened,
        Err(virtio_net::OpenError::Vector(queue)) => {
            log::warn!("net: the device refused the MSI-X vector of queue {queue}");
            release_interrupts(function, &interrupts);
            return Err(Errno::EIO);
        }
        Err(error) => {
            log::warn!("net: virtio-net negotiation failed: {error:?}");
            release_interrupts(function, &interrupts);
            return Err(Errno::EIO);
        }
    };
    transport.finish_init();
    static ANNOUNCED: AtomicBool = AtomicBool::new(false);
    let level = if ANNOUNCED.swap(true, Ordering::Relaxed) {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        "net: virtio-net up, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, {} queues of {}",
        identity.mac[0],
        identity.mac[1],
        identity.mac[2],
        identity.mac[3],
        identity.mac[4],
        identity.mac[5],
        2,
        virtio_net::QUEUE_SIZE
    );
    let device = Device {
        transport: IrqSpinLock::new(transport),
        live: AtomicBool::new(true),
        mac: identity.mac,
        function,
        interrupts,
    };
    Ok((device, queues))
}

fn setup_msix(function: DeviceFunction) -> Result<[u8; 2], &'static str> {
    let rx = crate::arch::irq::register(on_ring_interrupt, 0).map_err(|_| "no free vector")?;
    let tx = match crate::arch::irq::register(on_ring_interrupt, 1) {
        Ok(vector) => vector,
        Err(_) => {
            crate::arch::irq::unregister(rx);
            return Err("no free vector");
        }
    };
    if crate::dev::pci::enable_msix(function, &[rx, tx]).is_err() {
        crate::arch::irq::unregister(rx);
        crate::arch::irq::unregister(tx);
        return Err("no MSI-X capability");
    }
    Ok([rx, tx])
}

fn setup_intx(function: DeviceFunction, isr: u64) -> Result<Interrupts, Errno> {
    let gsi = crate::dev::pci::intx_gsi(function).ok_or(Errno::ENODEV)?;
    let vector = crate::arch::irq::register(on_intx, 0)?;
    INTX_ISR.store(crate::mm::phys_to_virt(isr), Ordering::Release);
    if let Err(error) = crate::arch::irq::route_gsi(gsi, vector, true) {
        INTX_ISR.store(0, Ordering::Release);
        crate::arch::irq::unregister(vector);
        return Err(error);
    }
    Ok(Interrupts::Intx { gsi, vector })
}
