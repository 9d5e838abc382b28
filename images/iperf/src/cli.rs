//! The command line (see the crate documentation for the contract).

use crate::proto::{
    DEFAULT_LEN, DEFAULT_PORT, MAX_LEN, MAX_OMIT_CLI, MAX_STREAMS, MAX_TIME, MAX_WINDOW,
};

pub const USAGE: &str = "\
usage: iperf -s [-p PORT] [-1]
       iperf -c HOST [-p PORT] [-t SECS] [-P N] [-R] [--bidir] [-l LEN] [-w BYTES] [-O SECS] [-J]
  -s, --server         serve iperf3 clients one after another (default port 5201)
  -1, --one-off        (server) exit after one test
  -c, --client HOST    run a test against an iperf3 server on HOST
  -p, --port PORT      server port (default 5201; the server takes 0 for any free port)
  -t, --time SECS      seconds to transmit (default 10, at most 86400)
  -P, --parallel N     parallel streams (default 1, at most 128)
  -R, --reverse        the server sends, the client receives
      --bidir          both send at once (N streams each way)
  -l, --length LEN     block size for read/write (default 128K, at most 1M; K/M suffixes)
  -w, --window BYTES   SO_SNDBUF/SO_RCVBUF of every data socket (K/M suffixes)
  -O, --omit SECS      leave the first SECS seconds out of the results (at most 60)
  -J, --json           print iperf3's JSON document instead of text
  -h, --help           this text
";

/// A client run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    pub time: u64,
    pub parallel: u32,
    pub reverse: bool,
    pub bidir: bool,
    pub len: usize,
    /// 0: leave the socket buffers alone.
    pub window: u64,
    pub omit: u64,
    pub json: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Server { port: u16, one_off: bool },
    Client(ClientOptions),
}

/// A size with an optional K, M or G suffix (1024-based, as iperf3's
/// `unit_atoi`; a fraction is allowed: `1.5M`).
pub fn parse_size(s: &str) -> Option<u64> {
    let (number, scale) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let bytes = value * scale as f64;
    (bytes.is_finite() && bytes < 1e18).then_some(bytes as u64)
}

/// Options that take a value, short and long.
const VALUED: [(&str, &str); 7] = [
    ("-c", "--client"),
    ("-p", "--port"),
    ("-t", "--time"),
    ("-P", "--parallel"),
    ("-l", "--length"),
    ("-w", "--window"),
    ("-O", "--omit"),
];

fn canonical(word: &str) -> Option<&'static str> {
    VALUED
        .iter()
        .find(|(s, l)| word == *s || word == *l)
        .map(|(s, _)| *s)
}

fn ranged(name: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} {value:?}: expected a whole number from {min} to {max}"
        )),
    }
}

/// Parses the arguments (without argv[0]).
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut server = false;
    let mut one_off = false;
    let mut host: Option<String> = None;
    let mut port: Option<u16> = None;
    let mut reverse = false;
    let mut bidir = false;
    let mut json = false;
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let word = args[i].as_str();
        i += 1;
        // `--name=value`, `-Xvalue` or `-X value`.
        let (name, inline) =
            if let Some((n, v)) = word.split_once('=').filter(|_| word.starts_with("--")) {
                (n, Some(v.to_string()))
            } else if let Some(short) = word
                .get(..2)
                .filter(|s| !word.starts_with("--") && word.len() > 2 && canonical(s).is_some())
            {
                (short, Some(word[2..].to_string()))
            } else {
                (word, None)
            };
        if let Some(short) = canonical(name) {
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = args.get(i).ok_or_else(|| format!("{name} needs a value"))?;
                    i += 1;
                    v.clone()
                }
            };
            if values.iter().any(|(n, _)| *n == short) {
                return Err(format!("{name} given twice"));
            }
            values.push((short, value));
            continue;
        }
        if inline.is_some() {
            return Err(format!("{name} takes no value"));
        }
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "-s" | "--server" => server = true,
            "-1" | "--one-off" => one_off = true,
            "-R" | "--reverse" => reverse = true,
            "--bidir" => bidir = true,
            "-J" | "--json" => json = true,
            _ => return Err(format!("unknown option {word:?}")),
        }
    }
    let mut time = 10;
    let mut parallel = 1;
    let mut len = DEFAULT_LEN;
    let mut window = 0;
    let mut omit = 0;
    let mut client_only: Vec<&str> = Vec::new();
    for (name, value) in &values {
        match *name {
            "-c" => {
                if value.is_empty() {
                    return Err("-c needs a host".into());
                }
                host = Some(value.clone());
            }
            "-p" => {
                port = Some(value.parse::<u16>().map_err(|_| {
                    format!("-p {value:?}: expected a port number from 0 to 65535")
                })?);
            }
            "-t" => time = ranged("-t", value, 1, MAX_TIME)?,
            "-P" => parallel = ranged("-P", value, 1, u64::from(MAX_STREAMS))? as u32,
            "-O" => omit = ranged("-O", value, 0, MAX_OMIT_CLI)?,
            "-l" => {
                len = parse_size(value)
                    .filter(|n| (1..=MAX_LEN as u64).contains(n))
                    .ok_or_else(|| format!("-l {value:?}: expected a size from 1 to 1M"))?
                    as usize;
            }
            "-w" => {
                window = parse_size(value)
                    .filter(|n| (1..=MAX_WINDOW).contains(n))
                    .ok_or_else(|| format!("-w {value:?}: expected a size from 1 to 512M"))?;
            }
            _ => {}
        }
        if *name != "-p" && *name != "-c" {
            client_only.push(name);
        }
    }
    for (flag, on) in [("-R", reverse), ("--bidir", bidir), ("-J", json)] {
        if on {
            client_only.push(flag);
        }
    }
    match (server, host) {
        (true, Some(_)) => Err("-s and -c cannot be used together".into()),
        (false, None) => Err("either -s or -c HOST is required".into()),
        (true, None) => {
            if let Some(o) = client_only.first() {
                return Err(format!("{o} is a client option"));
            }
            Ok(Command::Server {
                port: port.unwrap_or(DEFAULT_PORT),
                one_off,
            })
        }
        (false, Some(host)) => {
            if one_off {
                return Err("-1 is a server option".into());
            }
            if reverse && bidir {
                return Err("-R and --bidir cannot be used together".into());
            }
            let port = port.unwrap_or(DEFAULT_PORT);
            if port == 0 {
                return Err("-p 0: the client needs a port from 1 to 65535".into());
            }
            Ok(Command::Client(ClientOptions {
                host,
                port,
                time,
                parallel,
                reverse,
                bidir,
                len,
                window,
                omit,
                json,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &str) -> Result<Command, String> {
        parse(
            &words
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16K"), Some(16_384));
        assert_eq!(parse_size("1.5m"), Some(1_572_864));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("-1K"), None);
        assert_eq!(parse_size("1e9"), None);
    }

    #[test]
    fn servers() {
        assert_eq!(
            p("-s"),
            Ok(Command::Server {
                port: 5201,
                one_off: false
            })
        );
        assert_eq!(
            p("-s -p 0 -1"),
            Ok(Command::Server {
                port: 0,
                one_off: true
            })
        );
        assert_eq!(
            p("--server --port=7000"),
            Ok(Command::Server {
                port: 7000,
                one_off: false
            })
        );
        assert!(p("-s -t 3").is_err());
        assert!(p("-s -R").is_err());
        assert!(p("-s -c x").is_err());
        assert!(p("-s -p 70000").is_err());
    }

    #[test]
    fn clients() {
        let Ok(Command::Client(c)) =
            p("-c 10.0.2.2 -p5202 -t 2 -P 4 --bidir -l 16K -w 256K -O 1 -J")
        else {
            panic!()
        };
        assert_eq!(
            c,
            ClientOptions {
                host: "10.0.2.2".into(),
                port: 5202,
                time: 2,
                parallel: 4,
                reverse: false,
                bidir: true,
                len: 16_384,
                window: 262_144,
                omit: 1,
                json: true
            }
        );
        for bad in [
            "-c",
            "-c h -t 0",
            "-c h -P 129",
            "-c h -l 2M",
            "-c h -R --bidir",
            "-c h -1",
            "-c h -O 61",
            "-c h -x",
            "-c h -t 2 -t 3",
            "-c h -p 0",
            "-c h -J=1",
            "-c h aé",
            "é",
            "",
            "-t 2",
        ] {
            assert!(p(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(p("-h"), Ok(Command::Help));
    }
}
