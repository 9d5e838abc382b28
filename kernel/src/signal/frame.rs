//! The Linux x86_64 signal frame (rt_sigframe) and rt_sigreturn.
