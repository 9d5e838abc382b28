//! virtio-net over virtio-drivers' transports and virtqueues, split so that
//! each queue can be owned by its own worker.
//!
//! Owns: the negotiation (`open`: MAC and VERSION_1 only, no offloads, no
//! merged buffers, so every RX buffer holds one whole frame), one
//! `RxRing` and one `TxRing` (256 entries each), and each ring's DMA
//! buffers: 256 slots of 2 KiB from the HAL's DMA allocator, freed when
//! the ring is dropped. No locks: the kernel puts the transport under one
//! lock and gives each ring to one worker. Frames are always copied, in
//! and out; nothing of the caller's is ever lent to the device, so a ring
//! can always be drained and freed.
//!
//! Whatever the device writes is checked before use: a used-ring id that
//! names no buffer in flight is `RingError::BadToken` (the ring must be
//! reset), a used length past the buffer or shorter than the header is a
//! dropped frame.

use alloc::boxed::Box;
use core::marker::PhantomData;
use core::ptr::NonNull;

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// Entries per virtqueue.
pub const QUEUE_SIZE: usize = 256;
/// Bytes per buffer slot (a 1514-byte frame plus the header fits).
pub const SLOT_SIZE: usize = 2048;
/// `virtio_net_hdr_v1` (VERSION_1: `num_buffers` included).
pub const HEADER_LEN: usize = 12;
/// The largest Ethernet frame (without FCS) a slot carries.
pub const MAX_FRAME: usize = SLOT_SIZE - HEADER_LEN;
/// Virtqueue indices.
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
const PAGE_SIZE: usize = 4096;
const POOL_PAGES: usize = QUEUE_SIZE * SLOT_SIZE / PAGE_SIZE;

bitflags::bitflags! {
    /// The feature bits Spindle negotiates.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct NetFeatures: u64 {
        const MAC = 1 << 5;
        const VERSION_1 = 1 << 32;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The device does not offer VIRTIO_F_VERSION_1 (a legacy device).
    Legacy,
    /// A queue could not be set up (too small, or no DMA memory).
    Queue(virtio_drivers::Error),
    /// No DMA memory for the buffers.
    NoMemory,
    /// The caller could not give a queue its interrupt vector.
    Vector(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The device returned an id that names no buffer in flight.
    BadToken,
}

/// 256 slots of DMA memory.
struct SlotPool<H: Hal> {
    paddr: PhysAddr,
    vaddr: NonNull<u8>,
    _hal: PhantomData<H>,
}

// SAFETY: the pool is plain memory owned by one ring; it moves between
// LWPs with the ring, never shared.
unsafe impl<H: Hal> Send for SlotPool<H> {}

impl<H: Hal> SlotPool<H> {
    fn new() -> Option<Self> {
        let (paddr, vaddr) = H::dma_alloc(POOL_PAGES, BufferDirection::Both);
        (paddr != 0).then_some(SlotPool {
            paddr,
            vaddr,
            _hal: PhantomData,
        })
    }

    /// Slot `index` as a byte slice.
    ///
    /// Callers hold `&mut self` of the ring and only touch a slot the
    /// device does not own (not in flight), or hand it to the virtqueue.
    #[allow(clippy::mut_from_ref)]
    fn slot(&self, index: usize) -> &mut [u8] {
        debug_assert!(index < QUEUE_SIZE);
        // SAFETY: the pool spans QUEUE_SIZE slots of SLOT_SIZE bytes of
        // memory owned by this pool; each slot is reached by one path at a
        // time (its ring's owner, or the device while in flight).
        unsafe {
            core::slice::from_raw_parts_mut(self.vaddr.as_ptr().add(index * SLOT_SIZE), SLOT_SIZE)
        }
    }
}

impl<H: Hal> Drop for SlotPool<H> {
    fn drop(&mut self) {
        // SAFETY: allocated by `dma_alloc` with these values in `new`; the
        // owning ring is gone, so the device holds none of it (rings are
        // dropped only after the device was reset or drained).
        unsafe { H::dma_dealloc(self.paddr, self.vaddr, POOL_PAGES) };
    }
}

/// The device's identity after `open`.
#[derive(Debug, Clone, Copy)]
pub struct NetIdentity {
    pub mac: [u8; 6],
    pub features: NetFeatures,
}

/// Both queues of an opened device.
pub struct NetQueues<H: Hal> {
    pub rx: Box<RxRing<H>>,
    pub tx: Box<TxRing<H>>,
}

/// Resets the device, negotiates, and sets up both virtqueues. Before a
/// queue is enabled, `assign_vector(queue)` gives it its interrupt vector
/// (virtio 1.x, 4.1.5.1.3: the vector is set while the queue is being
/// configured; `false` fails the open). The device is not live yet: the
/// caller then calls `transport.finish_init()` (DRIVER_OK). The rings are
/// boxed: each holds several KiB of descriptor bookkeeping.
pub fn open<H: Hal, T: Transport>(
    transport: &mut T,
    mut assign_vector: impl FnMut(u16) -> bool,
) -> Result<(NetIdentity, NetQueues<H>), OpenError> {
    let features = transport.begin_init(NetFeatures::MAC | NetFeatures::VERSION_1);
    if !features.contains(NetFeatures::VERSION_1) {
        return Err(OpenError::Legacy);
    }
    let mut mac = [0u8; 6];
    if features.contains(NetFeatures::MAC) {
        for (index, byte) in mac.iter_mut().enumerate() {
            *byte = transport.read_config_space::<u8>(index).unwrap_or(0);
        }
    } else {
        mac = [0x52, 0x54, 0x00, 0x53, 0x50, 0x4e];
    }
    let mut queue = |index: u16| {
        if !assign_vector(index) {
            return Err(OpenError::Vector(index));
        }
        VirtQueue::new(transport, index, false, false).map_err(OpenError::Queue)
    };
    let rx_queue = queue(RX_QUEUE)?;
    let tx_queue = queue(TX_QUEUE)?;
    let rx_pool = SlotPool::new().ok_or(OpenError::NoMemory)?;
    let tx_pool = SlotPool::new().ok_or(OpenError::NoMemory)?;
    let rx = Box::new(RxRing {
        queue: rx_queue,
        pool: rx_pool,
        in_flight: [false; QUEUE_SIZE],
        token_slot: [u16::MAX; QUEUE_SIZE],
        count: 0,
    });
    let tx = Box::new(TxRing {
        queue: tx_queue,
        pool: tx_pool,
        free_slots: (0..QUEUE_SIZE as u16).rev().collect(),
        token_slot: [u16::MAX; QUEUE_SIZE],
        count: 0,
    });
    Ok((NetIdentity { mac, features }, NetQueues { rx, tx }))
}

/// The receive queue and its buffers.
pub struct RxRing<H: Hal> {
    queue: VirtQueue<H, QUEUE_SIZE>,
    pool: SlotPool<H>,
    /// Slots lent to the device.
    in_flight: [bool; QUEUE_SIZE],
    /// Which slot each token (head descriptor) carries.
    token_slot: [u16; QUEUE_SIZE],
    count: usize,
}

/// What one harvested RX buffer held.
pub enum Received<'a> {
    Frame(&'a [u8]),
    /// The used length was shorter than the header or past the buffer.
    Malformed(u32),
}

impl<H: Hal> RxRing<H> {
    /// Lends every free slot to the device; returns how many it lent.
    pub fn refill(&mut self) -> usize {
        let mut posted = 0;
        for slot in 0..QUEUE_SIZE {
            if self.in_flight[slot] {
                continue;
            }
            let buffer = self.pool.slot(slot);
            // SAFETY: the slot is not in flight and stays owned by this
            // ring until `pop_used` returns it in `harvest_one`.
            match unsafe { self.queue.add(&[], &mut [buffer]) } {
                Ok(token) => {
                    self.in_flight[slot] = true;
                    self.token_slot[usize::from(token)] = slot as u16;
                    self.count += 1;
                    posted += 1;
                }
                Err(_) => break,
            }
        }
        posted
    }

    /// Takes the next used buffer, if any, and shows its frame (without
    /// the virtio header) to `consume`. The slot is free again afterwards
    /// (call `refill` to lend it back).
    pub fn harvest_one<R>(
        &mut self,
        consume: impl FnOnce(Received<'_>) -> R,
    ) -> Result<Option<R>, RingError> {
        let Some(token) = self.queue.peek_used() else {
            return Ok(None);
        };
        let slot = *self
            .token_slot
            .get(usize::from(token))
            .ok_or(RingError::BadToken)?;
        if slot as usize >= QUEUE_SIZE || !self.in_flight[slot as usize] {
            return Err(RingError::BadToken);
        }
        let buffer = self.pool.slot(slot as usize);
        // SAFETY: `token` was returned by `add` for exactly this one
        // buffer, which is still in flight.
        let length = unsafe { self.queue.pop_used(token, &[], &mut [buffer]) }
            .map_err(|_| RingError::BadToken)?;
        self.in_flight[slot as usize] = false;
        self.token_slot[usize::from(token)] = u16::MAX;
        self.count -= 1;
        let buffer = self.pool.slot(slot as usize);
        let length = length as usize;
        let received = if length <= HEADER_LEN || length > SLOT_SIZE {
            Received::Malformed(length as u32)
        } else {
            Received::Frame(&buffer[HEADER_LEN..length])
        };
        Ok(Some(consume(received)))
    }

    /// Buffers the device holds.
    pub fn in_flight(&self) -> usize {
        self.count
    }

    /// Whether the device has returned buffers not yet harvested.
    pub fn has_used(&self) -> bool {
        self.queue.can_pop()
    }

    /// Asks the device for (or spares it) used-buffer interrupts.
    pub fn set_interrupts(&mut self, enabled: bool) {
        self.queue.set_dev_notify(enabled);
    }

    pub fn should_notify(&self) -> bool {
        self.queue.should_notify()
    }
}

/// The transmit queue and its buffers.
pub struct TxRing<H: Hal> {
    queue: VirtQueue<H, QUEUE_SIZE>,
    pool: SlotPool<H>,
    free_slots: alloc::vec::Vec<u16>,
    token_slot: [u16; QUEUE_SIZE],
    count: usize,
}

impl<H: Hal> TxRing<H> {
    /// Whether a frame can be posted now.
    pub fn has_room(&self) -> bool {
        !self.free_slots.is_empty()
    }

    /// How many frames can be posted now.
    pub fn room(&self) -> usize {
        self.free_slots.len()
    }

    /// Copies `frame` after a zeroed header into a free slot and lends it
    /// to the device. Returns `false` (nothing posted) when the ring is
    /// full or the frame is too large.
    pub fn post(&mut self, frame: &[u8]) -> bool {
        if frame.len() > MAX_FRAME {
            return false;
        }
        let Some(slot) = self.free_slots.pop() else {
            return false;
        };
        let buffer = self.pool.slot(usize::from(slot));
        buffer[..HEADER_LEN].fill(0);
        buffer[HEADER_LEN..HEADER_LEN + frame.len()].copy_from_slice(frame);
        let buffer = &buffer[..HEADER_LEN + frame.len()];
        // SAFETY: the slot is free (not in flight) and stays untouched
        // until `reclaim` pops it.
        match unsafe { self.queue.add(&[buffer], &mut []) } {
            Ok(token) => {
                self.token_slot[usize::from(token)] = slot;
                self.count += 1;
                true
            }
            Err(_) => {
                self.free_slots.push(slot);
                false
            }
        }
    }

    /// Takes back every buffer the device has finished with; returns how
    /// many.
    pub fn reclaim(&mut self) -> Result<usize, RingError> {
        let mut reclaimed = 0;
        while let Some(token) = self.queue.peek_used() {
            let slot = *self
                .token_slot
                .get(usize::from(token))
                .ok_or(RingError::BadToken)?;
            if slot as usize >= QUEUE_SIZE {
                return Err(RingError::BadToken);
            }
            let buffer = &*self.pool.slot(usize::from(slot));
            // The slot's full length stands for what was added: the queue
            // only passes it to `unshare`, a no-op for this HAL.
            // SAFETY: `token` was returned by `add` for this one buffer,
            // which is still in flight.
            unsafe { self.queue.pop_used(token, &[buffer], &mut []) }
                .map_err(|_| RingError::BadToken)?;
            self.token_slot[usize::from(token)] = u16::MAX;
            self.free_slots.push(slot);
            self.count -= 1;
            reclaimed += 1;
        }
        Ok(reclaimed)
    }

    /// Buffers the device holds.
    pub fn in_flight(&self) -> usize {
        self.count
    }

    pub fn set_interrupts(&mut self, enabled: bool) {
        self.queue.set_dev_notify(enabled);
    }

    /// Whether the device wants a notification for new buffers.
    pub fn should_notify(&self) -> bool {
        self.queue.should_notify()
    }
}
