//! The "firmware floor" kernel: the smallest PVH ELF QEMU will boot. It
//! exits with success at once, so its boot time is the cost of QEMU and
//! firmware alone — the floor under Spindle's own boot time.
//!
//! Layout: ELF64 header, two program headers (PT_NOTE, PT_LOAD), the Xen
//! note, then the code at file offset 0x100, loaded at physical 0x100000.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Where the floor kernel's code is loaded and entered (physical).
pub const LOAD_ADDR: u64 = 0x10_0000;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note QEMU reads the PVH entry point from.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PHNUM: usize = 2;
const NOTE_OFFSET: usize = EHDR_SIZE + PHNUM * PHDR_SIZE;
const CODE_OFFSET: usize = 0x100;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;

/// 32-bit code run at the PVH entry (protected mode, paging off):
/// `mov al, 0x10; out 0xf4, al` (isa-debug-exit: success), then
/// `cli; hlt; jmp hlt` in case the exit device is missing.
pub const CODE: [u8; 8] = [0xb0, 0x10, 0xe6, 0xf4, 0xfa, 0xf4, 0xeb, 0xfd];

/// The Xen PVH note, with an 8-byte descriptor as Linux writes it
/// (`_ASM_PTR`). QEMU 7.2's `read_pvh_start_addr` reads a `size_t` for ELF64
/// files but hands only the low 32 bits to the firmware, so a 4-byte
/// descriptor boots too (tested); 8 bytes leaves nothing to chance.
fn xen_note(entry: u64) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(4u32.to_le_bytes()); // namesz: "Xen\0"
    n.extend(8u32.to_le_bytes()); // descsz
    n.extend(XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    n.extend(b"Xen\0");
    n.extend(entry.to_le_bytes());
    n
}

struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    addr: u64,
    size: u64,
    align: u64,
}

impl Phdr {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend(self.kind.to_le_bytes());
        out.extend(self.flags.to_le_bytes());
        out.extend(self.offset.to_le_bytes());
        out.extend(self.addr.to_le_bytes()); // p_vaddr
        out.extend(self.addr.to_le_bytes()); // p_paddr
        out.extend(self.size.to_le_bytes()); // p_filesz
        out.extend(self.size.to_le_bytes()); // p_memsz
        out.extend(self.align.to_le_bytes());
    }
}

/// The complete floor kernel image.
pub fn floor_elf() -> Vec<u8> {
    let note = xen_note(LOAD_ADDR);
    let mut out = Vec::with_capacity(CODE_OFFSET + CODE.len());
    // ELF header.
    out.extend(b"\x7fELF");
    out.extend([2, 1, 1, 0]); // ELFCLASS64, little-endian, version 1, SysV ABI
    out.extend([0u8; 8]); // ABI version + padding
    out.extend(ET_EXEC.to_le_bytes());
    out.extend(EM_X86_64.to_le_bytes());
    out.extend(1u32.to_le_bytes()); // e_version
    out.extend(LOAD_ADDR.to_le_bytes()); // e_entry
    out.extend((EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    out.extend(0u64.to_le_bytes()); // e_shoff: no sections
    out.extend(0u32.to_le_bytes()); // e_flags
    out.extend((EHDR_SIZE as u16).to_le_bytes());
    out.extend((PHDR_SIZE as u16).to_le_bytes());
    out.extend((PHNUM as u16).to_le_bytes());
    out.extend(64u16.to_le_bytes()); // e_shentsize
    out.extend(0u16.to_le_bytes()); // e_shnum
    out.extend(0u16.to_le_bytes()); // e_shstrndx
    // Program headers. The note's alignment must be 4: QEMU aligns the
    // name size up to p_align to find the descriptor.
    let note_ph = Phdr {
        kind: PT_NOTE,
        flags: 4, // R
        offset: NOTE_OFFSET as u64,
        addr: 0,
        size: note.len() as u64,
        align: 4,
    };
    let load_ph = Phdr {
        kind: PT_LOAD,
        flags: 5, // R + X
        offset: CODE_OFFSET as u64,
        addr: LOAD_ADDR,
        size: CODE.len() as u64,
        align: 0x10,
    };
    note_ph.write(&mut out);
    load_ph.write(&mut out);
    out.extend(&note);
    out.resize(CODE_OFFSET, 0);
    out.extend(CODE);
    out
}

/// Writes the floor kernel into the runner's scratch directory.
pub fn write_floor_kernel() -> Result<PathBuf> {
    let dir = crate::scratch_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("floor.elf");
    write_to(&path)?;
    Ok(path)
}

fn write_to(path: &Path) -> Result<()> {
    std::fs::write(path, floor_elf()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn header_fields() {
        let elf = floor_elf();
        assert_eq!(&elf[0..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "ELFCLASS64");
        assert_eq!(elf[5], 1, "little-endian");
        assert_eq!(u16_at(&elf, 16), ET_EXEC);
        assert_eq!(u16_at(&elf, 18), EM_X86_64);
        assert_eq!(u64_at(&elf, 24), LOAD_ADDR, "e_entry");
        assert_eq!(u64_at(&elf, 32), 64, "e_phoff");
        assert_eq!(u16_at(&elf, 52), 64, "e_ehsize");
        assert_eq!(u16_at(&elf, 54), 56, "e_phentsize");
        assert_eq!(u16_at(&elf, 56), 2, "e_phnum");
    }

    #[test]
    fn load_segment_holds_the_exit_code_at_1mib() {
        let elf = floor_elf();
        let ph = 64 + 56; // second program header
        assert_eq!(u32_at(&elf, ph), PT_LOAD);
        let offset = u64_at(&elf, ph + 8) as usize;
        assert_eq!(u64_at(&elf, ph + 16), LOAD_ADDR, "p_vaddr");
        assert_eq!(u64_at(&elf, ph + 24), LOAD_ADDR, "p_paddr");
        let size = u64_at(&elf, ph + 32) as usize;
        assert_eq!(u64_at(&elf, ph + 40), size as u64, "memsz == filesz");
        let align = u64_at(&elf, ph + 48);
        assert_eq!(offset as u64 % align, LOAD_ADDR % align, "congruent");
        assert_eq!(&elf[offset..offset + size], &CODE);
        assert_eq!(
            &CODE[..4],
            &[0xb0, 0x10, 0xe6, 0xf4],
            "mov al,0x10; out 0xf4,al"
        );
        assert_eq!(elf.len(), offset + size);
    }

    #[test]
    fn note_segment_holds_the_pvh_entry() {
        let elf = floor_elf();
        let ph = 64;
        assert_eq!(u32_at(&elf, ph), PT_NOTE);
        assert_eq!(u64_at(&elf, ph + 48), 4, "p_align 4");
        let off = u64_at(&elf, ph + 8) as usize;
        let size = u64_at(&elf, ph + 32) as usize;
        assert_eq!(size, 24);
        assert_eq!(u32_at(&elf, off), 4, "namesz");
        assert_eq!(u32_at(&elf, off + 4), 8, "descsz");
        assert_eq!(u32_at(&elf, off + 8), XEN_ELFNOTE_PHYS32_ENTRY);
        assert_eq!(&elf[off + 12..off + 16], b"Xen\0");
        assert_eq!(u64_at(&elf, off + 16), LOAD_ADDR);
        assert!(off + size <= CODE_OFFSET, "note does not overlap the code");
    }
}
