//! Accelerator choice: KVM only where it is hardware virtualization.
//!
//! Some hosts expose a `/dev/kvm` that is a software implementation, far
//! slower than TCG; the CPU flags (`vmx`/`svm`) tell the two apart.

use std::fs::OpenOptions;

/// What the user asked for with `--accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when it is hardware-backed, else TCG.
    Auto,
    /// Force KVM.
    Kvm,
    /// Force TCG (QEMU's binary translator).
    Tcg,
}

/// The accelerator the guest actually runs under, with the reason why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelDecision {
    pub accel: crate::qemu::Accel,
    pub reason: String,
}

/// True when a `/proc/cpuinfo` text advertises hardware virtualization.
pub fn cpuinfo_has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .filter_map(|line| line.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Decides the accelerator from the request and the host facts (pure logic).
pub fn decide(choice: AccelChoice, kvm_openable: bool, cpuinfo: &str) -> AccelDecision {
    use crate::qemu::Accel;
    let hw = cpuinfo_has_hw_virt(cpuinfo);
    let (accel, reason) = match choice {
        AccelChoice::Kvm => (Accel::Kvm, "forced by --accel kvm".to_string()),
        AccelChoice::Tcg => (Accel::Tcg, "forced by --accel tcg".to_string()),
        AccelChoice::Auto => match (kvm_openable, hw) {
            (true, true) => (
                Accel::Kvm,
                "/dev/kvm opens read-write and the CPU shows vmx/svm".to_string(),
            ),
            (true, false) => (
                Accel::Tcg,
                "/dev/kvm present but the CPU shows no vmx/svm: software KVM would be slower"
                    .to_string(),
            ),
            (false, _) => (
                Accel::Tcg,
                "/dev/kvm missing or not read-write for this user".to_string(),
            ),
        },
    };
    AccelDecision { accel, reason }
}

/// Decides the accelerator by looking at this host.
pub fn decide_for_host(choice: AccelChoice) -> AccelDecision {
    let kvm_openable = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    decide(choice, kvm_openable, &cpuinfo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Accel;

    const INTEL_VMX: &str = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx sse2\n";
    const AMD_SVM: &str = "processor\t: 0\nflags\t\t: fpu svm lm\n";
    const NO_VIRT: &str = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr sse2 hypervisor\n";
    // "vmx" appearing outside the flags line, or as part of a longer flag,
    // must not count.
    const DECOY: &str = "model name\t: vmx svm\nflags\t\t: fpu vmxnot xsvm\n";

    #[test]
    fn flags_are_read_from_the_flags_line_only() {
        assert!(cpuinfo_has_hw_virt(INTEL_VMX));
        assert!(cpuinfo_has_hw_virt(AMD_SVM));
        assert!(!cpuinfo_has_hw_virt(NO_VIRT));
        assert!(!cpuinfo_has_hw_virt(DECOY));
        assert!(!cpuinfo_has_hw_virt(""));
    }

    #[test]
    fn auto_picks_kvm_only_with_openable_kvm_and_hw_virt() {
        assert_eq!(decide(AccelChoice::Auto, true, INTEL_VMX).accel, Accel::Kvm);
        assert_eq!(decide(AccelChoice::Auto, true, AMD_SVM).accel, Accel::Kvm);
        let soft = decide(AccelChoice::Auto, true, NO_VIRT);
        assert_eq!(soft.accel, Accel::Tcg);
        assert!(soft.reason.contains("no vmx/svm"), "{}", soft.reason);
        let closed = decide(AccelChoice::Auto, false, INTEL_VMX);
        assert_eq!(closed.accel, Accel::Tcg);
        assert!(closed.reason.contains("/dev/kvm"), "{}", closed.reason);
    }

    #[test]
    fn forced_choices_win() {
        assert_eq!(decide(AccelChoice::Kvm, false, NO_VIRT).accel, Accel::Kvm);
        assert_eq!(decide(AccelChoice::Tcg, true, INTEL_VMX).accel, Accel::Tcg);
    }
}
