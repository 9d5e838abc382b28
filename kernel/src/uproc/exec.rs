//! Loading a static Linux x86_64 executable into an address space, and the
//! initial stack exactly as Linux builds it.
//!
//! Accepts ELF64 little-endian x86_64 files of type `ET_EXEC` (static) or
//! `ET_DYN` without `PT_INTERP` (static PIE, loaded at a random base).
//! Every header field is checked against the file before use; a bad image
//! gives an `ExecError` naming what is wrong. Owns nothing after loading.
//! `initial_auxv` repeats the auxiliary vector the stack holds (for core
//! files); `image` is the guest image, for symbols.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use elf::ElfBytes;
use elf::abi;
use elf::endian::LittleEndian;

use crate::mm::PAGE_SIZE;
use crate::mm::vm::{AddressSpace, Region, RegionKind, USER_END, USER_START, prot};

/// Top of the main thread's stack (as on Linux, just under the top of the
/// lower half).
pub const STACK_TOP: u64 = 0x7fff_ffff_f000;
/// The main stack may grow to this size.
pub const STACK_SIZE: u64 = 8 << 20;
/// Where position-independent executables are placed (plus a random
/// number of pages).
const PIE_BASE: u64 = 0x5555_5555_4000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    Empty,
    NotElf(String),
    NotX86_64(u16),
    NotExecutable(u16),
    Dynamic,
    BadSegment(String),
    NoLoadableSegment,
    OutOfMemory,
    ArgumentsTooLong,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Empty => f.write_str("the image is empty"),
            ExecError::NotElf(why) => write!(f, "not a valid ELF64 little-endian file ({why})"),
            ExecError::NotX86_64(machine) => {
                write!(f, "built for machine {machine}, not x86_64 (62)")
            }
            ExecError::NotExecutable(kind) => {
                write!(f, "ELF type {kind} is not an executable (2) or PIE (3)")
            }
            ExecError::Dynamic => {
                f.write_str("dynamically linked (has PT_INTERP); only static executables run")
            }
            ExecError::BadSegment(why) => write!(f, "bad program header: {why}"),
            ExecError::NoLoadableSegment => f.write_str("no PT_LOAD segment"),
            ExecError::OutOfMemory => f.write_str("not enough memory to load it"),
            ExecError::ArgumentsTooLong => {
                f.write_str("arguments and environment exceed the stack")
            }
        }
    }
}

/// What the loader placed, for the initial stack and the program break.
pub struct Loaded {
    pub entry: u64,
    pub program_headers: u64,
    pub program_header_count: u64,
    pub program_header_size: u64,
    pub brk_start: u64,
}

struct Segment {
    vaddr: u64,
    offset: u64,
    file_size: u64,
    mem_size: u64,
    prot: u32,
}

fn page_down(value: u64) -> u64 {
    value & !(PAGE_SIZE - 1)
}

fn page_up(value: u64) -> Option<u64> {
    value.checked_add(PAGE_SIZE - 1).map(page_down)
}

/// Loads `image` into `vm` (empty), with PIE offset `random_pages`.
pub fn load(image: &[u8], vm: &AddressSpace, random_pages: u64) -> Result<Loaded, ExecError> {
    if image.is_empty() {
        return Err(ExecError::Empty);
    }
    let file = ElfBytes::<LittleEndian>::minimal_parse(image)
        .map_err(|error| ExecError::NotElf(alloc::format!("{error}")))?;
    let header = file.ehdr;
    if header.class != elf::file::Class::ELF64 {
        return Err(ExecError::NotElf("32-bit".into()));
    }
    if header.e_machine != abi::EM_X86_64 {
        return Err(ExecError::NotX86_64(header.e_machine));
    }
    let base = match header.e_type {
        abi::ET_EXEC => 0,
        abi::ET_DYN => PIE_BASE + (random_pages % 0x1_0000) * PAGE_SIZE,
        other => return Err(ExecError::NotExecutable(other)),
    };
    let table = file.segments().ok_or(ExecError::NoLoadableSegment)?;
    let mut segments = Vec::new();
    let mut program_headers = None;
    for header in table.iter() {
        match header.p_type {
            abi::PT_INTERP => return Err(ExecError::Dynamic),
            abi::PT_PHDR => program_headers = Some(header.p_vaddr),
            abi::PT_LOAD => {
                let end_in_file = header.p_offset.checked_add(header.p_filesz);
                if end_in_file.is_none_or(|end| end > image.len() as u64) {
                    return Err(ExecError::BadSegment(alloc::format!(
                        "data at {:#x}+{:#x} lies past the end of the {}-byte file",
                        header.p_offset,
                        header.p_filesz,
                        image.len()
                    )));
                }
                if header.p_filesz > header.p_memsz {
                    return Err(ExecError::BadSegment(
                        "file size larger than memory size".into(),
                    ));
                }
                let start = base.checked_add(header.p_vaddr);
                let end = start.and_then(|start| start.checked_add(header.p_memsz));
                match (start, end) {
                    (Some(start), Some(end))
                        if start >= USER_START && end <= STACK_TOP - STACK_SIZE => {}
                    _ => {
                        return Err(ExecError::BadSegment(alloc::format!(
                            "segment at {:#x} (+{:#x}) is outside user memory",
                            header.p_vaddr,
                            header.p_memsz
                        )));
                    }
                }
                let mut segment_prot = 0;
                if header.p_flags & abi::PF_R != 0 {
                    segment_prot |= prot::READ;
                }
                if header.p_flags & abi::PF_W != 0 {
                    segment_prot |= prot::WRITE;
                }
                if header.p_flags & abi::PF_X != 0 {
                    segment_prot |= prot::EXEC;
                }
                segments.push(Segment {
                    vaddr: base + header.p_vaddr,
                    offset: header.p_offset,
                    file_size: header.p_filesz,
                    mem_size: header.p_memsz,
                    prot: segment_prot,
                });
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ExecError::NoLoadableSegment);
    }
    // Page-granular regions; pages shared by two segments get both rights.
    let mut regions: Vec<(u64, u64, u32)> = Vec::new();
    for segment in &segments {
        let start = page_down(segment.vaddr);
        let end = page_up(segment.vaddr + segment.mem_size)
            .ok_or(ExecError::BadSegment("wraps".into()))?;
        if let Some(last) = regions.last_mut()
            && start < last.1
        {
            if start < last.0 {
                return Err(ExecError::BadSegment(
                    "PT_LOAD segments out of order".into(),
                ));
            }
            last.1 = last.1.max(end);
            last.2 |= segment.prot;
            continue;
        }
        regions.push((start, end, segment.prot));
    }
    {
        let mut layout = vm.layout.lock();
        for &(start, end, region_prot) in &regions {
            layout.regions.insert(
                start,
                Region {
                    end,
                    prot: region_prot,
                    kind: RegionKind::Image,
                },
            );
        }
    }
    for &(start, end, region_prot) in &regions {
        vm.populate(start..end, region_prot, |page, bytes| {
            for segment in &segments {
                let data_start = segment.vaddr;
                let data_end = segment.vaddr + segment.file_size;
                let from = data_start.max(page);
                let to = data_end.min(page + PAGE_SIZE);
                if from < to {
                    let file_at = (segment.offset + (from - segment.vaddr)) as usize;
                    let length = (to - from) as usize;
                    bytes[(from - page) as usize..(from - page) as usize + length]
                        .copy_from_slice(&image[file_at..file_at + length]);
                }
            }
        })
        .map_err(|_| ExecError::OutOfMemory)?;
    }
    // Where the program headers are in memory: PT_PHDR, or the loaded
    // segment that contains them in the file.
    let program_headers = match program_headers {
        Some(vaddr) => base + vaddr,
        None => segments
            .iter()
            .find(|segment| {
                (segment.offset..segment.offset + segment.file_size).contains(&header.e_phoff)
            })
            .map(|segment| segment.vaddr + (header.e_phoff - segment.offset))
            .unwrap_or(0),
    };
    let brk_start = regions
        .iter()
        .map(|region| region.1)
        .max()
        .unwrap_or(USER_START);
    Ok(Loaded {
        entry: base + header.e_entry,
        program_headers,
        program_header_count: u64::from(header.e_phnum),
        program_header_size: u64::from(header.e_phentsize),
        brk_start,
    })
}

// Auxiliary vector keys.
const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;

/// The strings block at the top of the initial stack: argv and envp
/// strings, the platform name, the random bytes; and where each starts.
struct StackStrings {
    bytes: Vec<u8>,
    /// Where the block starts (its lowest address, 16-byte aligned).
    start: u64,
    argv: Vec<u64>,
    envp: Vec<u64>,
    platform: u64,
    random: u64,
}

fn stack_strings(argv: &[String], envp: &[String], random: [u8; 16]) -> StackStrings {
    let mut bytes: Vec<u8> = Vec::new();
    let mut argv_offsets = Vec::new();
    let mut envp_offsets = Vec::new();
    for argument in argv {
        argv_offsets.push(bytes.len());
        bytes.extend_from_slice(argument.as_bytes());
        bytes.push(0);
    }
    for variable in envp {
        envp_offsets.push(bytes.len());
        bytes.extend_from_slice(variable.as_bytes());
        bytes.push(0);
    }
    let platform_offset = bytes.len();
    bytes.extend_from_slice(b"x86_64\0");
    let random_offset = bytes.len();
    bytes.extend_from_slice(&random);
    let start = (STACK_TOP - 16 - bytes.len() as u64) & !15;
    let at = |offset: usize| start + offset as u64;
    StackStrings {
        argv: argv_offsets.into_iter().map(at).collect(),
        envp: envp_offsets.into_iter().map(at).collect(),
        platform: at(platform_offset),
        random: at(random_offset),
        bytes,
        start,
    }
}

fn auxv_for(loaded: &Loaded, strings: &StackStrings) -> Vec<(u64, u64)> {
    let hwcap = u64::from(core::arch::x86_64::__cpuid(1).edx);
    alloc::vec![
        (AT_PHDR, loaded.program_headers),
        (AT_PHENT, loaded.program_header_size),
        (AT_PHNUM, loaded.program_header_count),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, loaded.entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_PLATFORM, strings.platform),
        (AT_HWCAP, hwcap),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, strings.random),
        (AT_HWCAP2, 0),
        (AT_EXECFN, strings.argv.first().copied().unwrap_or(0)),
        (AT_NULL, 0),
    ]
}

/// The auxiliary vector `build_stack` gives a program loaded as `loaded`
/// with `argv` and `envp`: (type, value) pairs ending with `AT_NULL`, the
/// same values (addresses included) the stack holds. For core files
/// (`Process::set_auxv`).
pub fn initial_auxv(loaded: &Loaded, argv: &[String], envp: &[String]) -> Vec<(u64, u64)> {
    auxv_for(loaded, &stack_strings(argv, envp, [0; 16]))
}

/// The guest image: the first boot module, read in place (for symbols in
/// `pstack`). None when the boot loader gave no module.
pub fn image() -> Option<&'static [u8]> {
    let range = crate::BOOT_MODULES.lock().first().cloned()?;
    Some(super::image_bytes(&range))
}

/// Builds the initial stack in `vm` (its region included): argc, argv,
/// envp, auxv and the strings they point at, as Linux lays them out.
/// Returns the initial stack pointer (16-byte aligned, at argc).
pub fn build_stack(
    vm: &AddressSpace,
    loaded: &Loaded,
    argv: &[String],
    envp: &[String],
    random: [u8; 16],
) -> Result<u64, ExecError> {
    // The strings block, from the top down: random bytes, platform, then
    // argv and envp strings.
    let strings = stack_strings(argv, envp, random);
    let strings_start = strings.start;
    let auxv = auxv_for(loaded, &strings);
    let mut words: Vec<u64> = Vec::new();
    words.push(argv.len() as u64);
    words.extend(strings.argv.iter().copied());
    words.push(0);
    words.extend(strings.envp.iter().copied());
    words.push(0);
    for &(key, value) in &auxv {
        words.push(key);
        words.push(value);
    }
    let words_size = words.len() as u64 * 8;
    let stack_pointer = (strings_start - words_size) & !15;
    if STACK_TOP - stack_pointer > 256 * 1024 {
        return Err(ExecError::ArgumentsTooLong);
    }
    let stack_bottom = STACK_TOP - STACK_SIZE;
    vm.layout.lock().regions.insert(
        stack_bottom,
        Region {
            end: STACK_TOP,
            prot: prot::READ | prot::WRITE,
            kind: RegionKind::Stack,
        },
    );

    // The image of the used top of the stack, then copied page by page.
    let image_start = page_down(stack_pointer);
    let mut image = alloc::vec![0u8; (STACK_TOP - image_start) as usize];
    for (index, word) in words.iter().enumerate() {
        let at = (stack_pointer - image_start) as usize + index * 8;
        image[at..at + 8].copy_from_slice(&word.to_le_bytes());
    }
    let at = (strings_start - image_start) as usize;
    image[at..at + strings.bytes.len()].copy_from_slice(&strings.bytes);
    vm.populate(
        image_start..STACK_TOP,
        prot::READ | prot::WRITE,
        |page, bytes| {
            let from = (page - image_start) as usize;
            bytes.copy_from_slice(&image[from..from + PAGE_SIZE as usize]);
        },
    )
    .map_err(|_| ExecError::OutOfMemory)?;
    debug_assert!(stack_pointer < USER_END);
    Ok(stack_pointer)
}

crate::ktests! {
    fn initial_auxv_matches_the_stack_layout() {
        let loaded = Loaded {
            entry: 0x40_1000,
            program_headers: 0x40_0040,
            program_header_count: 4,
            program_header_size: 56,
            brk_start: 0x60_0000,
        };
        let argv = [String::from("prog"), String::from("-x")];
        let envp = [String::from("A=1")];
        let auxv = initial_auxv(&loaded, &argv, &envp);
        let value = |key: u64| auxv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        assert_eq!(auxv.last(), Some(&(AT_NULL, 0)));
        assert_eq!(value(AT_ENTRY), Some(0x40_1000));
        assert_eq!(value(AT_PHDR), Some(0x40_0040));
        assert_eq!(value(AT_PHNUM), Some(4));
        let strings = stack_strings(&argv, &envp, [7; 16]);
        assert_eq!(value(AT_EXECFN), Some(strings.argv[0]));
        assert_eq!(value(AT_RANDOM), Some(strings.random));
        assert_eq!(strings.start % 16, 0);
        assert_eq!(&strings.bytes[..8], b"prog\0-x\0");
        assert!(strings.random + 16 <= STACK_TOP);
    }
}
