//! The in-kernel test harness.
//!
//! Tests are plain functions registered per module with `ktests!`; a module
//! list below gathers them. Booting with `ktest=all` (or a comma-separated
//! list of names or name prefixes) runs them in order and prints, each at the
//! start of a line, the fixed format the host harness parses:
//!
//! ```text
//! KTEST BEGIN count=<n>
//! KTEST RUN <name>
//! KTEST PASS <name> (<micros> us)
//! KTEST FAIL <name>: <message>
//! KTEST END passed=<p> failed=<f>
//! ```
//!
//! `ktest=list` prints `KTEST LIST <name>` lines instead. A test fails by
//! panicking (`assert!`); the panic handler prints its `KTEST FAIL` line and
//! stops the machine with a failure exit code, so the tests after it do not
//! run and the host reports them as not run. State: the name of the running
//! test (`RUNNING`), read by the panic handler.

use alloc::vec::Vec;

use crate::{power, println, sync::IrqSpinLock, time};

/// One registered test.
pub struct KTest {
    /// The full path, `spindle_kernel::mm::frame::ktests::name`; shown as
    /// `mm::frame::name`.
    pub name: &'static str,
    pub run: fn(),
}

/// Declares a module's in-kernel tests: `ktests! { fn name() { ... } ... }`.
/// The functions live in a private `ktests` submodule that sees the
/// enclosing module's items, and `ktests::KTESTS` lists them.
#[macro_export]
macro_rules! ktests {
    ($(fn $name:ident() $body:block)*) => {
        pub(crate) mod ktests {
            #[allow(unused_imports)]
            use super::*;
            $(fn $name() $body)*
            pub(crate) const KTESTS: &[$crate::ktest::KTest] = &[$(
                $crate::ktest::KTest {
                    name: concat!(module_path!(), "::", stringify!($name)),
                    run: $name,
                },
            )*];
        }
    };
}

/// Every module's tests, in the order they run.
const MODULES: &[&[KTest]] = &[
    crate::cmdline::ktests::KTESTS,
    crate::mm::frame::ktests::KTESTS,
    crate::mm::heap::ktests::KTESTS,
    crate::mm::paging::ktests::KTESTS,
    crate::mm::stack::ktests::KTESTS,
    crate::arch::trap::ktests::KTESTS,
    // Device vectors and the PCI bus.
    crate::arch::irq::ktests::KTESTS,
    crate::dev::pci::ktests::KTESTS,
    crate::time::ktests::KTESTS,
    crate::platform::ktests::KTESTS,
    // SMP, per-CPU, TLB shootdown and FPU (arch/mm owner).
    crate::cpu::ktests::KTESTS,
    crate::arch::gdt::ktests::KTESTS,
    crate::arch::smp::ktests::KTESTS,
    crate::mm::tlb::ktests::KTESTS,
    crate::arch::fpu::ktests::KTESTS,
    crate::mm::usercopy::ktests::KTESTS,
    // Scheduler, sleep/wake-up, kernel threads and their interfaces.
    crate::sched::tests::ktests::KTESTS,
    crate::compat::netbsd::ktests::KTESTS,
    crate::compat::freebsd::ktests::KTESTS,
    crate::compat::freebsd4::ktests::KTESTS,
    crate::compat::illumos::ktests::KTESTS,
    // Signals and process stops.
    crate::signal::tests::ktests::KTESTS,
    // The control channel and what it reads (exec's auxiliary vector).
    crate::uproc::exec::ktests::KTESTS,
    crate::ctl::json::ktests::KTESTS,
    crate::ctl::stack::ktests::KTESTS,
    crate::ctl::core::ktests::KTESTS,
    crate::ctl::commands::ktests::KTESTS,
    crate::ctl::ktests::KTESTS,
    // Descriptors and sockets (over the loopback stack).
    crate::fd::ktests::KTESTS,
    crate::net::socket::tests::ktests::KTESTS,
    // The network attachment: rings, workers, the device.
    crate::net::check::ktests::KTESTS,
    crate::net::tests::ktests::KTESTS,
];

static RUNNING: IrqSpinLock<Option<&'static str>> = IrqSpinLock::new(None);

/// The display name of a test: its module path without the crate name and
/// without the `ktests` submodule.
fn display_name(test: &KTest) -> DisplayName {
    DisplayName(test.name)
}

struct DisplayName(&'static str);

impl core::fmt::Display for DisplayName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let path = self.0.strip_prefix("spindle_kernel::").unwrap_or(self.0);
        let mut first = true;
        for part in path.split("::").filter(|part| *part != "ktests") {
            if !first {
                f.write_str("::")?;
            }
            f.write_str(part)?;
            first = false;
        }
        Ok(())
    }
}

fn all_tests() -> impl Iterator<Item = &'static KTest> {
    MODULES.iter().flat_map(|module| module.iter())
}

fn selected(selection: &str, test: &KTest) -> bool {
    if selection == "all" {
        return true;
    }
    let name = alloc::format!("{}", display_name(test));
    selection
        .split(',')
        .filter(|pattern| !pattern.is_empty())
        .any(|pattern| name.starts_with(pattern))
}

/// Runs the tests chosen by `selection` (the `ktest=` value) and stops the
/// machine: success if every test passed, failure otherwise.
pub fn run(selection: &str) -> ! {
    if selection == "list" {
        for test in all_tests() {
            println!("KTEST LIST {}", display_name(test));
        }
        power::exit(power::ExitCode::Success);
    }

    let tests: Vec<&KTest> = all_tests()
        .filter(|test| selected(selection, test))
        .collect();
    println!("KTEST BEGIN count={}", tests.len());
    if tests.is_empty() {
        println!("KTEST END passed=0 failed=0");
        log::error!("ktest={selection}: no test has that name or prefix");
        power::exit(power::ExitCode::Failure);
    }
    for test in &tests {
        *RUNNING.lock() = Some(test.name);
        println!("KTEST RUN {}", display_name(test));
        let started = time::now_ns();
        (test.run)();
        let micros = (time::now_ns() - started) / 1_000;
        *RUNNING.lock() = None;
        println!("KTEST PASS {} ({} us)", display_name(test), micros);
    }
    println!("KTEST END passed={} failed=0", tests.len());
    power::exit(power::ExitCode::Success);
}

/// Called by the panic handler: reports the running test as failed, if any.
/// Returns whether a test was running.
pub fn report_panic(message: core::fmt::Arguments) -> bool {
    let running = RUNNING.try_lock().and_then(|guard| *guard);
    match running {
        Some(name) => {
            crate::console::emergency_write(format_args!(
                "KTEST FAIL {}: {}\n",
                DisplayName(name),
                message
            ));
            true
        }
        None => false,
    }
}

/// Polls `condition` every millisecond until it holds or `timeout_ms`
/// pass; returns whether it held. For tests that wait on other threads.
pub fn wait_until(timeout_ms: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = time::now_ns() + timeout_ms * 1_000_000;
    loop {
        if condition() {
            return true;
        }
        if time::now_ns() >= deadline {
            return false;
        }
        crate::sched::sleep_ns(1_000_000);
    }
}

/// Runs `body` in a kernel thread bound to CPU `index` and waits for it,
/// for tests whose subject is per-CPU. A panic in `body` fails the test.
pub fn on_cpu(index: usize, body: impl FnOnce() + Send + 'static) {
    let thread = crate::kthread::Builder::new("ktest-on-cpu")
        .cpu(index)
        .joinable()
        .spawn(body)
        .expect("a test thread on the CPU");
    crate::kthread::join(&thread).expect("join the test thread");
}
