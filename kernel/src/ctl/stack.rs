//! `pstack`'s pieces: the frame-pointer unwinder for a parked user LWP,
//! symbol lookup in the guest image's `.symtab`, and a demangler for
//! Rust's legacy symbol names.
//!
//! Owns nothing and takes no locks of its own: user memory is read through
//! a caller's function (in the kernel, `AddressSpace::read_present`, which
//! never faults a page in), and the image is a byte slice. Bad input (a
//! garbage frame chain, a stripped or malformed image, an odd symbol name)
//! ends a walk early or gives no symbol; it never panics.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use elf::ElfBytes;
use elf::endian::LittleEndian;
use elf::string_table::StringTable;
use elf::symbol::SymbolTable;

/// The most frames one thread's stack gives.
pub const MAX_FRAMES: usize = 64;

/// The program counters of a stack: `pc`, then the return address of every
/// frame found from `frame_pointer` on (`[rbp]` = the caller's rbp,
/// `[rbp + 8]` = the return address). Stops at a zero or misaligned frame
/// pointer, one that does not move up the stack, a zero return address,
/// memory `read` cannot give, or `MAX_FRAMES`.
pub fn walk(
    pc: u64,
    frame_pointer: u64,
    mut read: impl FnMut(u64, &mut [u8; 16]) -> bool,
) -> Vec<u64> {
    let mut frames = alloc::vec![pc];
    let mut frame = frame_pointer;
    while frames.len() < MAX_FRAMES {
        if frame == 0 || !frame.is_multiple_of(8) {
            break;
        }
        let mut record = [0u8; 16];
        if !read(frame, &mut record) {
            break;
        }
        let (saved, returned) = record.split_at(8);
        let saved = u64::from_le_bytes(saved.try_into().unwrap_or([0; 8]));
        let return_address = u64::from_le_bytes(returned.try_into().unwrap_or([0; 8]));
        if return_address == 0 {
            break;
        }
        frames.push(return_address);
        if saved <= frame {
            break;
        }
        frame = saved;
    }
    frames
}

/// The function symbols of an ELF image, placed at `bias` (the load base
/// of a position-independent image, 0 for a fixed one).
pub struct Symbols<'image> {
    table: SymbolTable<'image, LittleEndian>,
    names: StringTable<'image>,
    bias: u64,
}

impl<'image> Symbols<'image> {
    /// None for an image that does not parse or has no `.symtab`.
    pub fn of(image: &'image [u8], bias: u64) -> Option<Symbols<'image>> {
        let file = ElfBytes::<LittleEndian>::minimal_parse(image).ok()?;
        let (table, names) = file.symbol_table().ok()??;
        Some(Symbols { table, names, bias })
    }

    /// The function containing `address`, and the offset into it.
    pub fn lookup(&self, address: u64) -> Option<(&'image str, u64)> {
        self.table
            .iter()
            .filter(|symbol| {
                matches!(
                    symbol.st_symtype(),
                    elf::abi::STT_FUNC | elf::abi::STT_GNU_IFUNC
                ) && !symbol.is_undefined()
                    && symbol.st_size > 0
            })
            .find_map(|symbol| {
                let start = symbol.st_value.wrapping_add(self.bias);
                let offset = address.wrapping_sub(start);
                if offset >= symbol.st_size {
                    return None;
                }
                let name = self.names.get(symbol.st_name as usize).ok()?;
                Some((name, offset))
            })
    }

    /// `name+0xoff` for the function containing `pc`. `return_address`:
    /// `pc` is where a call returns to, so the call itself (one byte
    /// before) decides the function.
    pub fn describe(&self, pc: u64, return_address: bool) -> Option<String> {
        let probe = if return_address {
            pc.wrapping_sub(1)
        } else {
            pc
        };
        let (name, offset) = self.lookup(probe)?;
        let offset = offset.wrapping_add(pc.wrapping_sub(probe));
        let mut text = demangle(name).unwrap_or_else(|| String::from(name));
        let _ = write!(text, "+{offset:#x}");
        Some(text)
    }
}

/// Where a process placed `image`: 0 for a fixed-address executable;
/// for a position-independent one, `AT_ENTRY` minus the image's entry,
/// else `lowest_image_page` minus its first segment's page.
pub fn load_bias(image: &[u8], auxv: &[(u64, u64)], lowest_image_page: Option<u64>) -> u64 {
    const AT_ENTRY: u64 = 9;
    let Ok(file) = ElfBytes::<LittleEndian>::minimal_parse(image) else {
        return 0;
    };
    if file.ehdr.e_type != elf::abi::ET_DYN {
        return 0;
    }
    if let Some(&(_, entry)) = auxv.iter().find(|(key, _)| *key == AT_ENTRY) {
        return entry.wrapping_sub(file.ehdr.e_entry);
    }
    let first_segment = file.segments().and_then(|table| {
        table
            .iter()
            .filter(|header| header.p_type == elf::abi::PT_LOAD)
            .map(|header| header.p_vaddr & !0xfff)
            .min()
    });
    match (lowest_image_page, first_segment) {
        (Some(page), Some(vaddr)) => page.wrapping_sub(vaddr),
        _ => 0,
    }
}

/// A Rust legacy-mangled name (`_ZN...E`) as a path without its hash
/// (`core::panicking::panic`); None for any other name.
pub fn demangle(symbol: &str) -> Option<String> {
    let mut rest = symbol.strip_prefix("_ZN")?;
    let mut parts: Vec<&str> = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('E') {
            // Only a `.suffix` (such as `.llvm.123`) may follow.
            if !after.is_empty() && !after.starts_with('.') {
                return None;
            }
            break;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let length: usize = rest.get(..digits)?.parse().ok()?;
        let end = digits.checked_add(length)?;
        parts.push(rest.get(digits..end)?);
        rest = rest.get(end..)?;
    }
    if parts.len() > 1 && parts.last().is_some_and(|last| is_hash(last)) {
        parts.pop();
    }
    if parts.is_empty() {
        return None;
    }
    let mut text = String::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            text.push_str("::");
        }
        unescape_into(&mut text, part);
    }
    Some(text)
}

/// `h` and 16 hex digits: the hash legacy mangling appends.
fn is_hash(part: &str) -> bool {
    part.len() == 17
        && part.starts_with('h')
        && part[1..].bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Undoes legacy mangling's escapes in one path element: `$LT$` and
/// friends, `$u20$`-style code points, `..` for `::`, a leading `_$`.
fn unescape_into(out: &mut String, part: &str) {
    let mut rest = part.strip_prefix("_$").map_or(part, |_| &part[1..]);
    while let Some(character) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("..") {
            out.push_str("::");
            rest = after;
            continue;
        }
        if character == '$'
            && let Some(end) = rest[1..].find('$')
            && let Some(replacement) = escape_meaning(&rest[1..1 + end])
        {
            out.push(replacement);
            rest = &rest[end + 2..];
            continue;
        }
        out.push(character);
        rest = &rest[character.len_utf8()..];
    }
}

fn escape_meaning(code: &str) -> Option<char> {
    match code {
        "SP" => Some('@'),
        "BP" => Some('*'),
        "RF" => Some('&'),
        "LT" => Some('<'),
        "GT" => Some('>'),
        "LP" => Some('('),
        "RP" => Some(')'),
        "C" => Some(','),
        _ => {
            let hex = code.strip_prefix('u')?;
            char::from_u32(u32::from_str_radix(hex, 16).ok()?)
        }
    }
}

/// A minimal ELF64 executable with a `.symtab` of two functions, `main`
/// at 0x401000 (0x40 bytes) and `helper` at 0x401040 (0x20 bytes), for
/// tests.
pub fn test_image() -> Vec<u8> {
    let mut image = alloc::vec![0u8; 344];
    let put = |image: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        image[at..at + bytes.len()].copy_from_slice(bytes);
    };
    // ELF header: 64-bit, little-endian, ET_EXEC, x86_64, sections at 152.
    put(&mut image, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    put(&mut image, 16, &2u16.to_le_bytes());
    put(&mut image, 18, &62u16.to_le_bytes());
    put(&mut image, 20, &1u32.to_le_bytes());
    put(&mut image, 24, &0x40_1000u64.to_le_bytes());
    put(&mut image, 40, &152u64.to_le_bytes());
    put(&mut image, 52, &64u16.to_le_bytes());
    put(&mut image, 54, &56u16.to_le_bytes());
    put(&mut image, 58, &64u16.to_le_bytes());
    put(&mut image, 60, &3u16.to_le_bytes());
    // .strtab at 64, .symtab at 80 (null, main, helper).
    put(&mut image, 64, b"\0main\0helper\0");
    for (index, (name, value, size)) in [(1u32, 0x40_1000u64, 0x40u64), (6, 0x40_1040, 0x20)]
        .iter()
        .enumerate()
    {
        let at = 80 + 24 * (index + 1);
        put(&mut image, at, &name.to_le_bytes());
        put(&mut image, at + 4, &[0x12, 0]); // STB_GLOBAL | STT_FUNC
        put(&mut image, at + 6, &1u16.to_le_bytes());
        put(&mut image, at + 8, &value.to_le_bytes());
        put(&mut image, at + 16, &size.to_le_bytes());
    }
    // Section headers: null, .symtab (-> strtab 2), .strtab.
    let symtab = 152 + 64;
    put(&mut image, symtab + 4, &2u32.to_le_bytes());
    put(&mut image, symtab + 24, &80u64.to_le_bytes());
    put(&mut image, symtab + 32, &72u64.to_le_bytes());
    put(&mut image, symtab + 40, &2u32.to_le_bytes());
    put(&mut image, symtab + 44, &1u32.to_le_bytes());
    put(&mut image, symtab + 56, &24u64.to_le_bytes());
    let strtab = 152 + 128;
    put(&mut image, strtab + 4, &3u32.to_le_bytes());
    put(&mut image, strtab + 24, &64u64.to_le_bytes());
    put(&mut image, strtab + 32, &13u64.to_le_bytes());
    image
}

crate::ktests! {
    fn walks_a_synthetic_frame_chain() {
        // Frames at 0x7000_1000 (-> 0x7000_1040 -> 0x7000_1080 -> end).
        let base = 0x7000_1000u64;
        let mut memory = [0u64; 32];
        memory[0] = base + 0x40;
        memory[1] = 0x40_1111;
        memory[8] = base + 0x80;
        memory[9] = 0x40_2222;
        memory[16] = 0;
        memory[17] = 0x40_3333;
        let read = |address: u64, out: &mut [u8; 16]| {
            let index = address.wrapping_sub(base) as usize / 8;
            if address < base || index + 1 >= memory.len() {
                return false;
            }
            out[..8].copy_from_slice(&memory[index].to_le_bytes());
            out[8..].copy_from_slice(&memory[index + 1].to_le_bytes());
            true
        };
        assert_eq!(walk(0x40_0000, base, read), [0x40_0000, 0x40_1111, 0x40_2222, 0x40_3333]);
        assert_eq!(walk(0x40_0000, 0, read), [0x40_0000], "rbp 0: just the pc");
        assert_eq!(walk(0x40_0000, base + 4, read), [0x40_0000], "misaligned rbp");
        assert_eq!(walk(0x40_0000, 0x10, read), [0x40_0000], "unreadable rbp");
        // A frame that points at itself ends the walk, as does the cap.
        let looping = |_: u64, out: &mut [u8; 16]| {
            out[..8].copy_from_slice(&base.to_le_bytes());
            out[8..].copy_from_slice(&0x40_1111u64.to_le_bytes());
            true
        };
        assert_eq!(walk(1, base, looping).len(), 2);
        let mut next = base;
        let climbing = |_: u64, out: &mut [u8; 16]| {
            next += 16;
            out[..8].copy_from_slice(&next.to_le_bytes());
            out[8..].copy_from_slice(&0x40_1111u64.to_le_bytes());
            true
        };
        assert_eq!(walk(1, base, climbing).len(), MAX_FRAMES);
    }

    fn finds_function_symbols_with_offsets() {
        let image = test_image();
        let symbols = Symbols::of(&image, 0).expect("the test image has a .symtab");
        assert_eq!(symbols.lookup(0x40_1010), Some(("main", 0x10)));
        assert_eq!(symbols.lookup(0x40_1050), Some(("helper", 0x10)));
        assert_eq!(symbols.lookup(0x40_1060), None);
        assert_eq!(symbols.lookup(0x40_0fff), None);
        assert_eq!(symbols.describe(0x40_1040, true).as_deref(), Some("main+0x40"));
        assert_eq!(symbols.describe(0x40_1040, false).as_deref(), Some("helper+0x0"));
        assert_eq!(symbols.describe(0, true), None, "pc 0 is no call site");
        let moved = Symbols::of(&image, 0x1000).expect("parses");
        assert_eq!(moved.lookup(0x40_2010), Some(("main", 0x10)));
        assert!(Symbols::of(&image[..100], 0).is_none(), "a truncated image");
        assert!(Symbols::of(b"not an elf", 0).is_none());
        assert_eq!(load_bias(&image, &[(9, 0x50_1000)], None), 0, "ET_EXEC is not moved");
    }

    fn demangles_legacy_rust_names() {
        assert_eq!(
            demangle("_ZN4core9panicking5panic17h0123456789abcdefE").as_deref(),
            Some("core::panicking::panic")
        );
        assert_eq!(
            demangle("_ZN60_$LT$alloc..string..String$u20$as$u20$core..fmt..Display$GT$3fmt17h0123456789abcdefE")
                .as_deref(),
            Some("<alloc::string::String as core::fmt::Display>::fmt")
        );
        assert_eq!(demangle("_ZN3std2rt10lang_start17h0011223344556677E.llvm.42").as_deref(), Some("std::rt::lang_start"));
        assert_eq!(demangle("main"), None);
        assert_eq!(demangle("_ZN"), None);
        assert_eq!(demangle("_ZN99abcE"), None, "a length past the end");
        assert_eq!(demangle("_ZN3abcEjunk"), None);
        assert_eq!(demangle("_ZN3a$bE").as_deref(), Some("a$b"), "an unknown escape stays");
    }
}
