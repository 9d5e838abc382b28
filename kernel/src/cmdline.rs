//! The kernel command line (QEMU `-append`, handed over in the PVH start info).
//!
//! Owns a copy of the command line, taken once at boot before any memory is
//! handed out, so the firmware's copy may be reused. Read-only afterwards; no
//! lock. Arguments are `key=value` or bare `flag` words separated by spaces.
//! Known keys: `loglevel=`, `ktest=`, `crash=` (deliberate failures for the
//! harness's own tests), `test.*=` (expectations passed to in-kernel tests).

use spin::Once;

const MAX_LENGTH: usize = 4096;

pub struct CommandLine {
    bytes: [u8; MAX_LENGTH],
    length: usize,
}

static COMMAND_LINE: Once<CommandLine> = Once::new();

impl CommandLine {
    /// A command line from raw bytes: stops at the first NUL, keeps at most
    /// `MAX_LENGTH` bytes and replaces anything that is not printable ASCII.
    pub fn from_bytes(raw: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_LENGTH];
        let mut length = 0;
        for &byte in raw.iter().take_while(|&&byte| byte != 0).take(MAX_LENGTH) {
            bytes[length] = if byte.is_ascii_graphic() || byte == b' ' {
                byte
            } else {
                b'?'
            };
            length += 1;
        }
        Self { bytes, length }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is stored, so this cannot fail.
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("")
    }

    /// The value of the last `key=value` argument with this key.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.as_str()
            .split_ascii_whitespace()
            .rev()
            .filter_map(|argument| argument.split_once('='))
            .filter(|(name, _)| *name == key)
            .map(|(_, value)| value)
            .next()
    }
}

/// Records the command line; later calls are ignored.
pub fn init(raw: &[u8]) {
    COMMAND_LINE.call_once(|| CommandLine::from_bytes(raw));
}

/// The command line, or an empty one before `init`.
pub fn get() -> &'static CommandLine {
    static EMPTY: CommandLine = CommandLine {
        bytes: [0; MAX_LENGTH],
        length: 0,
    };
    COMMAND_LINE.get().unwrap_or(&EMPTY)
}

crate::ktests! {
    fn parses_key_values() {
        let line = CommandLine::from_bytes(b"loglevel=debug ktest=all flag x=1 x=2\0junk=1");
        assert_eq!(line.value("loglevel"), Some("debug"));
        assert_eq!(line.value("x"), Some("2"), "the last value wins");
        assert_eq!(line.value("flag"), None);
        assert_eq!(line.value("junk"), None, "text after the NUL is ignored");
        assert_eq!(line.value("missing"), None);
    }

    fn replaces_non_printable_bytes() {
        let line = CommandLine::from_bytes(b"a=\x01\xffb");
        assert_eq!(line.as_str(), "a=??b");
    }

    fn boot_command_line_is_the_one_qemu_passed() {
        // The harness boots every test group with `ktest=...`; the kernel
        // must have read it from the PVH start info to be running this.
        // The harness also passes `test.cpus=N`, which must come through
        // intact as a number.
        let line = get();
        assert!(line.value("ktest").is_some(), "command line was {:?}", line.as_str());
        let cpus = line.value("test.cpus").expect("the harness passes test.cpus");
        assert!(cpus.parse::<u32>().is_ok(), "test.cpus={cpus:?} is not a number");
    }
}
