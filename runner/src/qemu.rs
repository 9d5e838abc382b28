//! The description of one QEMU boot (`QemuConfig`) and its command line.
//!
//! Every boot gets the `isa-debug-exit` device so the guest's exit status
//! means something: 0x10 -> QEMU status 33 (success), 0x11 -> 35 (failure).
//! COM1 is always the first serial port (the console); a control-channel
//! socket, when asked for, becomes COM2 (see docs/control-channel.md).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The qboot firmware shipped by Debian's `qemu-system-data`.
pub const QBOOT_ROM: &str = "/usr/share/qemu/qboot.rom";
/// QEMU exit status when the guest wrote 0x10 to the debug-exit port.
pub const EXIT_SUCCESS_STATUS: i32 = 33;
/// QEMU exit status when the guest wrote 0x11 to the debug-exit port.
pub const EXIT_FAILURE_STATUS: i32 = 35;
/// The QEMU binary the runner launches.
pub const QEMU_BIN: &str = "qemu-system-x86_64";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// PCIe machine with ECAM (ACPI MCFG); the default.
    Q35,
    /// The older i440FX machine: port I/O PCI config only.
    Pc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// Minimal firmware (`/usr/share/qemu/qboot.rom`): fastest boot.
    Qboot,
    /// QEMU's default BIOS.
    Seabios,
}

/// A resolved accelerator (see `accel` for how `auto` is decided).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// Guest networking. Every variant but `None` gives the guest one
/// `virtio-net-pci` device on the netdev `net0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Net {
    /// No network device at all.
    None,
    /// QEMU user networking (slirp: the guest is 10.0.2.15/24, the host
    /// 10.0.2.2), with TCP `127.0.0.1:host_port` forwarded to the guest's
    /// `guest_port` for each `(host_port, guest_port)` of `hostfwd`.
    User { hostfwd: Vec<(u16, u16)> },
    /// Raw Ethernet frames in UDP datagrams (`-netdev socket,udp=...`):
    /// QEMU binds `127.0.0.1:udp_local`, delivers each datagram arriving
    /// there to the guest as one frame, and sends every frame the guest
    /// transmits to `127.0.0.1:udp_remote`. No slirp: give the guest
    /// `net.ip=`/`net.gw=`. Tests use it to inject (malformed) frames.
    Socket { udp_local: u16, udp_remote: u16 },
    /// A tap device `ifname` that already exists (in the network namespace
    /// QEMU runs in: see `QemuConfig::netns`); no slirp: give the guest
    /// `net.ip=`/`net.gw=`.
    Tap { ifname: String },
}

impl Net {
    /// `user` networking forwarding `port` on 127.0.0.1 to the same guest
    /// port.
    pub fn user_forwarding(port: u16) -> Net {
        Net::User {
            hostfwd: vec![(port, port)],
        }
    }

    /// The `-netdev` value, or `None` without a network.
    pub fn netdev(&self) -> Option<String> {
        match self {
            Net::None => None,
            Net::User { hostfwd } => {
                let mut v = "user,id=net0".to_string();
                for (host, guest) in hostfwd {
                    v.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
                }
                Some(v)
            }
            Net::Socket {
                udp_local,
                udp_remote,
            } => Some(format!(
                "socket,id=net0,udp=127.0.0.1:{udp_remote},localaddr=127.0.0.1:{udp_local}"
            )),
            Net::Tap { ifname } => Some(format!(
                "tap,id=net0,ifname={ifname},script=no,downscript=no"
            )),
        }
    }
}

/// Parses `HOST:GUEST` (or a lone `PORT` for both): TCP ports 1-65535.
pub fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let port = |what: &str, p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "--forward {s:?}: the {what} port {p:?} is not a TCP port (1-65535); \
                 expected HOST:GUEST, e.g. 8080:80"
            )),
            Ok(n) => Ok(n),
        }
    };
    match s.split_once(':') {
        Some((host, guest)) => Ok((port("host", host)?, port("guest", guest)?)),
        None => {
            let p = port("host", s)?;
            Ok((p, p))
        }
    }
}

/// Where the guest's COM1 goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serial {
    /// QEMU's stdin/stdout.
    Stdio,
    /// Appended to a file.
    File(PathBuf),
}

/// Everything that describes one boot.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    pub kernel: PathBuf,
    /// The guest program, handed to the kernel as QEMU's `-initrd` (the raw
    /// ELF file, not an archive).
    pub initrd: Option<PathBuf>,
    pub machine: Machine,
    pub firmware: Firmware,
    pub accel: Accel,
    /// `-cpu` model; `None`: `max` under TCG, `host` under KVM.
    pub cpu: Option<String>,
    pub smp: u32,
    pub mem_mib: u64,
    pub append: Option<String>,
    pub net: Net,
    pub serial: Serial,
    /// `Some(port)`: QEMU's gdb stub listens on 127.0.0.1:port.
    pub gdb_port: Option<u16>,
    /// Start with the CPUs stopped (`-S`), for gdb.
    pub paused: bool,
    /// `Some(path)`: the guest's COM2 (the control channel) is a unix
    /// socket QEMU listens on at `path`, accepting one client; the boot
    /// does not wait for it.
    pub ctl_socket: Option<PathBuf>,
    /// Appended verbatim at the end of the command line.
    pub extra_args: Vec<String>,
    /// `Some(name)`: QEMU runs inside that network namespace (`ip netns
    /// exec`, which execs QEMU, so the child is QEMU itself).
    pub netns: Option<String>,
}

impl QemuConfig {
    /// The default boot of `kernel`: q35, qboot when present, TCG, 1 CPU,
    /// 128 MiB, no network, serial on stdio.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        QemuConfig {
            kernel: kernel.into(),
            initrd: None,
            machine: Machine::Q35,
            firmware: default_firmware(),
            accel: Accel::Tcg,
            cpu: None,
            smp: 1,
            mem_mib: 128,
            append: None,
            net: Net::None,
            serial: Serial::Stdio,
            gdb_port: None,
            paused: false,
            ctl_socket: None,
            extra_args: Vec::new(),
            netns: None,
        }
    }

    pub fn with_append(mut self, append: impl Into<String>) -> Self {
        self.append = Some(append.into());
        self
    }

    pub fn with_smp(mut self, smp: u32) -> Self {
        self.smp = smp;
        self
    }

    /// The argument list after the QEMU binary name.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let machine = match self.machine {
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
        };
        push(&["-machine", machine]);
        let (accel, default_cpu) = match self.accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg => ("tcg", "max"),
        };
        let cpu = self.cpu.as_deref().unwrap_or(default_cpu);
        push(&["-accel", accel, "-cpu", cpu]);
        if self.firmware == Firmware::Qboot {
            push(&["-bios", QBOOT_ROM]);
        }
        push(&[
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ]);
        let serial = match &self.serial {
            Serial::Stdio => "stdio".to_string(),
            Serial::File(path) => format!("file:{}", path.display()),
        };
        if let Some(path) = &self.ctl_socket {
            // QEMU's option syntax escapes a comma in a value by doubling it.
            let path = path.display().to_string().replace(',', ",,");
            let chardev = format!("socket,id=ctl,path={path},server=on,wait=off");
            push(&["-chardev", &chardev]);
        }
        push(&["-serial", &serial]);
        if self.ctl_socket.is_some() {
            push(&["-serial", "chardev:ctl"]);
        }
        push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        let smp = self.smp.to_string();
        let mem = format!("{}M", self.mem_mib);
        push(&["-smp", &smp, "-m", &mem]);
        if let Some(netdev) = self.net.netdev() {
            push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"]);
        }
        if let Some(port) = self.gdb_port {
            let gdb = format!("tcp:127.0.0.1:{port}");
            push(&["-gdb", &gdb]);
        }
        if self.paused {
            push(&["-S"]);
        }
        let kernel = self.kernel.display().to_string();
        push(&["-kernel", &kernel]);
        if let Some(initrd) = &self.initrd {
            let initrd = initrd.display().to_string();
            push(&["-initrd", &initrd]);
        }
        if let Some(append) = &self.append {
            push(&["-append", append]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// The command to spawn (stdio not yet configured).
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, QEMU_BIN]);
                cmd
            }
            None => Command::new(QEMU_BIN),
        };
        cmd.args(self.args());
        cmd
    }

    /// The command line as a shell-pasteable string.
    pub fn command_line(&self) -> String {
        std::iter::once(QEMU_BIN.to_string())
            .chain(self.args())
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// qboot when its ROM is installed, SeaBIOS otherwise.
pub fn default_firmware() -> Firmware {
    if Path::new(QBOOT_ROM).is_file() {
        Firmware::Qboot
    } else {
        Firmware::Seabios
    }
}

/// Quotes one argument for a POSIX shell, only when it needs it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_pair(args: &[String], a: &str, b: &str) -> bool {
        args.windows(2).any(|w| w[0] == a && w[1] == b)
    }

    #[test]
    fn every_boot_has_the_exit_device_and_no_monitor() {
        let args = QemuConfig::new("/k").args();
        assert!(has_pair(
            &args,
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04"
        ));
        assert!(has_pair(&args, "-monitor", "none"));
        assert!(has_pair(&args, "-kernel", "/k"));
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(!args.iter().any(|a| a == "-initrd"));
    }

    #[test]
    fn an_image_becomes_the_initrd() {
        let mut c = QemuConfig::new("/k");
        c.initrd = Some("/images/hello".into());
        assert!(has_pair(&c.args(), "-initrd", "/images/hello"));
    }

    #[test]
    fn flags_map_to_qemu_arguments() {
        let mut c = QemuConfig::new("/k")
            .with_smp(4)
            .with_append("ktest=all test.cpus=4");
        c.machine = Machine::Pc;
        c.firmware = Firmware::Seabios;
        c.accel = Accel::Kvm;
        c.mem_mib = 512;
        c.net = Net::user_forwarding(5201);
        c.gdb_port = Some(1234);
        c.paused = true;
        let args = c.args();
        assert!(has_pair(&args, "-machine", "pc"));
        assert!(has_pair(&args, "-cpu", "host"));
        assert!(!args.iter().any(|a| a == "-bios"));
        assert!(has_pair(&args, "-smp", "4"));
        assert!(has_pair(&args, "-m", "512M"));
        assert!(has_pair(&args, "-append", "ktest=all test.cpus=4"));
        assert!(has_pair(
            &args,
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:5201-:5201"
        ));
        assert!(has_pair(&args, "-gdb", "tcp:127.0.0.1:1234"));
        assert!(args.iter().any(|a| a == "-S"));
        c.cpu = Some("qemu64".into());
        assert!(has_pair(&c.args(), "-cpu", "qemu64"));
        assert_eq!(c.args().iter().filter(|a| *a == "-cpu").count(), 1);
    }

    #[test]
    fn networks_become_a_netdev_and_one_virtio_device() {
        let plain = QemuConfig::new("/k").args();
        assert!(
            !plain
                .iter()
                .any(|a| a == "-netdev" || a.contains("virtio-net"))
        );

        let mut c = QemuConfig::new("/k");
        c.net = Net::User {
            hostfwd: vec![(40001, 7777), (40002, 8080)],
        };
        let args = c.args();
        assert!(has_pair(
            &args,
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:40001-:7777,hostfwd=tcp:127.0.0.1:40002-:8080"
        ));
        assert!(has_pair(&args, "-device", "virtio-net-pci,netdev=net0"));

        c.net = Net::User { hostfwd: vec![] };
        assert!(has_pair(&c.args(), "-netdev", "user,id=net0"));

        c.net = Net::Socket {
            udp_local: 40010,
            udp_remote: 40011,
        };
        let args = c.args();
        assert!(has_pair(
            &args,
            "-netdev",
            "socket,id=net0,udp=127.0.0.1:40011,localaddr=127.0.0.1:40010"
        ));
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with("virtio-net-pci"))
                .count(),
            1
        );
    }

    #[test]
    fn forwards_parse_with_clear_errors() {
        assert_eq!(parse_forward("8080:80"), Ok((8080, 80)));
        assert_eq!(parse_forward("5201"), Ok((5201, 5201)));
        for bad in [
            "", ":80", "80:", "0:80", "80:0", "x:80", "65536:1", "1:2:3", "-1:5",
        ] {
            let e = parse_forward(bad).unwrap_err();
            assert!(
                e.contains("--forward") && e.contains("HOST:GUEST"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_control_socket_becomes_the_second_serial_port() {
        let plain = QemuConfig::new("/k").args();
        assert_eq!(plain.iter().filter(|a| *a == "-serial").count(), 1);
        assert!(!plain.iter().any(|a| a == "-chardev"));

        let mut c = QemuConfig::new("/k");
        c.ctl_socket = Some("/run/a,b/ctl.sock".into());
        let args = c.args();
        assert!(has_pair(
            &args,
            "-chardev",
            "socket,id=ctl,path=/run/a,,b/ctl.sock,server=on,wait=off"
        ));
        let serials: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "-serial")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(serials, ["stdio", "chardev:ctl"]);

        c.serial = Serial::File("/tmp/log".into());
        let args = c.args();
        let serials: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "-serial")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(serials, ["file:/tmp/log", "chardev:ctl"]);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(
            shell_quote("ktest=all test.cpus=1"),
            "'ktest=all test.cpus=1'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
