//! Networking (stand-in until the lead's attachment lands): every process
//! shares one loopback attachment; the socket layer (`socket`) depends only
//! on the interface of `stack::Stack`, `attach` and `loopback_stack`.
//!
//! Owns the process-wide attachment (`ATTACHMENT`, created on first use)
//! and the kernel-test loopback stack (`LOOPBACK`). Locks: see `stack`.

pub mod socket;
pub mod stack;

use alloc::sync::Arc;

use spin::Once;

pub use self::stack::{Stack, StackInner};
use crate::errno::Errno;
use crate::proc::Process;

/// A process's network attachment: its stack.
pub struct Attachment {
    pub stack: Stack,
}

static ATTACHMENT: Once<Arc<Attachment>> = Once::new();
static LOOPBACK: Once<Arc<Stack>> = Once::new();

/// The process's attachment, created on first use.
pub fn attach(_process: &Arc<Process>) -> Result<Arc<Attachment>, Errno> {
    if let Some(attachment) = ATTACHMENT.get() {
        return Ok(Arc::clone(attachment));
    }
    let stack = Stack::loopback()?;
    Ok(Arc::clone(
        ATTACHMENT.call_once(|| Arc::new(Attachment { stack })),
    ))
}

/// A stack over smoltcp's loopback device (127.0.0.1/8), for kernel tests.
pub fn loopback_stack() -> Arc<Stack> {
    if let Some(stack) = LOOPBACK.get() {
        return Arc::clone(stack);
    }
    let stack = Stack::loopback().expect("a loopback stack and its polling thread");
    Arc::clone(LOOPBACK.call_once(|| Arc::new(stack)))
}
