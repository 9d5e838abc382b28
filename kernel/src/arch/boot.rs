//! PVH entry: from 32-bit protected mode to Rust in the upper half.
//!
//! QEMU (and Firecracker, Cloud Hypervisor) start a `-kernel` ELF at the
//! physical address named by its Xen PVH note, in 32-bit protected mode with
//! paging off and `ebx` holding the physical address of `hvm_start_info`.
//! This stub builds the boot page tables, enters long mode and calls `kmain`
//! on the boot stack. The boot page tables map:
//!
//! - physical 0..4 GiB at virtual 0 (identity, needed while the stub runs;
//!   `mm` removes it so the lower half is free for the user process);
//! - physical 0..4 GiB at `DIRECT_MAP_BASE` (the direct map; `mm` extends it
//!   past 4 GiB and marks non-RAM holes uncached);
//! - physical 0..1 GiB at `KERNEL_VMA` (-2 GiB), where the image is linked.
//!
//! They stay the kernel's page tables for good (`mm::paging` owns them).

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* name size */
    .long 8                 /* descriptor size */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start

    .section .boot.text, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    /* Four page directories of 2 MiB pages: physical 0..4 GiB. */
    mov $boot_pd, %edi
    mov $0x83, %eax                 /* present | writable | huge */
    mov $2048, %ecx
1:  mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b

    mov $boot_pd + 3, %eax
    mov $boot_pdpt_low, %edi
    mov $4, %ecx
2:  mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x1000, %eax
    add $8, %edi
    loop 2b

    /* The kernel window has a page directory of its own (first GiB), so the
       direct map's attributes (no-execute) never reach the kernel's text. */
    mov $boot_pd_kernel, %edi
    mov $0x83, %eax
    mov $512, %ecx
3:  mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 3b
    movl $boot_pd_kernel + 3, boot_pdpt_high + 510 * 8
    movl $boot_pdpt_low + 3, boot_pml4
    movl $boot_pdpt_low + 3, boot_pml4 + 256 * 8
    movl $boot_pdpt_high + 3, boot_pml4 + 511 * 8

    mov %cr4, %eax
    or $0x20, %eax                  /* PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx           /* EFER */
    rdmsr
    or $0x100, %eax                 /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax            /* PG | WP | PE */
    mov %eax, %cr0
    lgdt boot_gdtr
    ljmp $0x08, $boot_long_mode

    .code64
boot_long_mode:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %ebx, %edi                  /* hvm_start_info, zero-extended */
    movabs $kmain, %rax
    call *%rax
    ud2

    .section .boot.data, "aw"
    .balign 4096
boot_pml4:      .fill 512, 8, 0
boot_pdpt_low:  .fill 512, 8, 0
boot_pdpt_high: .fill 512, 8, 0
boot_pd:        .fill 2048, 8, 0
boot_pd_kernel: .fill 512, 8, 0
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 64-bit code */
    .quad 0x00cf92000000ffff        /* data */
boot_gdtr:
    .word 3 * 8 - 1
    .long boot_gdt

    .section .bss.boot_stack, "aw", @nobits
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    .skip 65536
    .global boot_stack_top
boot_stack_top:
    .text
"#,
    options(att_syntax)
);
