//! `iperf`: an iperf3-compatible TCP throughput tester, server and client,
//! that interoperates with iperf3 3.12 in both roles (the protocol is in
//! [`proto`]). Spindle's throughput benchmark; also runs on a Linux host
//! (`cargo run -p image-iperf -- -s`).
//!
//! Contract (the tests rely on it exactly):
//!
//! ```text
//! iperf -s [-p PORT] [-1]
//! iperf -c HOST [-p PORT] [-t SECS] [-P N] [-R] [--bidir] [-l LEN] [-w BYTES] [-O SECS] [-J]
//! ```
//!
//! - Long forms as iperf3's (`--server`, `--one-off`, `--client`, `--port`,
//!   `--time`, `--parallel`, `--reverse`, `--length`, `--window`, `--omit`,
//!   `--json`); values as the next word, `-P4` or `--time=2`. `-l` and `-w`
//!   take K, M or G suffixes (1024-based). Limits as iperf3's: `-t` 1 to
//!   86400 (default 10), `-P` 1 to 128 (default 1), `-l` 1 to 1M (default
//!   128K), `-w` up to 512M, `-O` 0 to 60 (default 0). A bad, unknown,
//!   repeated or misplaced option (a client option with `-s`, `-1` with
//!   `-c`, `-R` with `--bidir`) prints the problem and the usage on
//!   stderr and exits with status 2; `-h` prints the usage, status 0.
//!
//! Server (`-s`, port 5201 by default, 0 for any free one):
//!
//! - Once listening prints `iperf: server listening on 0.0.0.0:PORT` on
//!   stdout (flushed). A port it cannot listen on: `iperf: error: cannot
//!   listen on ...` on stderr, status 1.
//! - Serves tests one after another, for ever (with `-1`: one test, then
//!   exits, status 0 if it succeeded, else 1). While a test runs, every
//!   other control connection gets `ACCESS_DENIED` (iperf3: "the server is
//!   busy running a test") and the line `iperf: busy: denied peer=IP:PORT`.
//! - After each test, on stdout: `iperf: done peer=IP:PORT
//!   mode=receive|send|bidir streams=N sent=BYTES received=BYTES
//!   seconds=S.SSS`: the mode from the server's side (`receive` for a
//!   plain iperf3 client, `send` for `-R`), N the client's `-P`, the bytes
//!   this server counted after the omit period (those it reports to the
//!   client), the seconds it measured from the end of the omit period to
//!   `TEST_END`.
//! - A failed test prints `iperf: error: peer=IP:PORT: REASON` instead
//!   (and, when the client still listens, sends it iperf3's
//!   `SERVER_ERROR`), then the server takes the next client: a bad cookie,
//!   garbage or non-object JSON, a length prefix over 256 KiB, a close at
//!   any point, an unknown state byte, a parameter out of iperf3's range
//!   or not implemented here (UDP, SCTP, rate limits, MSS, TOS,
//!   congestion algorithms: iperf3's "not implemented" error), results
//!   that name a stream the test does not have.
//! - Time limits: every control read outside the data phase (the cookie,
//!   the parameters, the results, `IPERF_DONE`) within 5 s; all data
//!   connections within 10 s of `CREATE_STREAMS`; `TEST_END` within the
//!   test's `time + omit` plus 10 s (no limit for tests that end by bytes
//!   or blocks); and a test in which no stream moves a byte for 30 s
//!   fails.
//! - `-w` (`window`) becomes `SO_RCVBUF` and `SO_SNDBUF` of every
//!   accepted data socket, checked like iperf3 (`IESETBUF2` when the
//!   socket has less than asked for).
//!
//! Client (`-c HOST`):
//!
//! - Prints iperf3's text: `Connecting to host ...`, a `connected` line
//!   per stream, a line per stream per second (with `Retr` and `Cwnd`
//!   when `TCP_INFO` gives them, a `[SUM]` line with `-P` > 1,
//!   `(omitted)` during `-O`), then the sender and receiver summary and
//!   `iperf Done.`. With `-J` stdout is instead one JSON document shaped
//!   like iperf3's: `start` (`connected`, `cookie`, `test_start`, ...),
//!   `intervals[]` (`streams`, `sum`, `sum_bidir_reverse`), `end`
//!   (`streams`, `sum_sent`, `sum_received`, the `_bidir_reverse` pair,
//!   `cpu_utilization_percent`, congestion), and `error` when the test
//!   failed.
//! - Then `iperf: done peer=IP:PORT mode=send|receive|bidir streams=N
//!   sent=BYTES received=BYTES seconds=S.SSS` from the client's side
//!   (stdout; stderr with `-J`), status 0; a failure prints `iperf:
//!   error: REASON` on stderr (iperf3's wording for the server's errors,
//!   such as "the server is busy running a test. try again later"),
//!   status 1. Connections within 10 s, control reads within 10 s.
//!
//! Threads: the server's acceptor is the main thread, each test runs on
//! `iperf-ctl`; the client's control runs on `iperf-ctl`; every data
//! stream has its own thread, `iperf-stream<ID>` (ID as in the results),
//! with one buffer of `-l` bytes and nothing but `read`/`write` per block.
//!
//! Results fields follow iperf3: `cpu_util_total` (process CPU time,
//! `CLOCK_PROCESS_CPUTIME_ID`), `cpu_util_user`/`cpu_util_system`
//! (`getrusage`; without it all of it counts as user time),
//! `sender_has_retransmits` (`TCP_INFO`: 1 when it answers, else 0; -1
//! for a side that only receives), `congestion_used` (`TCP_CONGESTION`,
//! `unknown` when the OS does not say) and per stream `id`, `bytes`,
//! `retransmits`, `jitter`, `errors`, `packets`, `start_time`,
//! `end_time`.

mod cli;
mod client;
mod cpu;
mod proto;
mod report;
mod server;
mod sock;
mod stream;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Lossy: a word that is not UTF-8 becomes an unknown option, not a panic.
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match cli::parse(&args) {
        Ok(cli::Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(cli::Command::Server { port, one_off }) => server::run(port, one_off),
        Ok(cli::Command::Client(opts)) => client::run(opts),
        Err(message) => {
            eprint!("iperf: {message}\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}
