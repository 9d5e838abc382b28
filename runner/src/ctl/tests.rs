//! Unit tests of the control-channel client against a fake guest on the
//! other end of a socket pair.

use super::*;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

/// A connection and the fake guest's end of it.
fn pair() -> (CtlConnection, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (CtlConnection::from_stream(a, "/fake"), b)
}

/// Reads one command line on the guest's end (a byte at a time, so
/// nothing after it is consumed).
fn read_command(mut guest: &UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while guest.read(&mut byte).unwrap() == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn replies_payloads_and_events_between_them() {
    let (mut c, mut g) = pair();
    let guest = thread::spawn(move || {
        assert_eq!(read_command(&g), "ps\n");
        g.write_all(b"{\"event\":\"hello\",\"version\":1}\r\n\n")
            .unwrap();
        g.write_all(b"{\"ok\":[{\"pid\":0}]}\n").unwrap();
        assert_eq!(read_command(&g), "gcore 3\n");
        // A core event (payload holding a newline) before the reply.
        g.write_all(b"{\"event\":\"core\",\"pid\":3,\"signal\":11,\"bytes\":5}\nab\ncd\n")
            .unwrap();
        g.write_all(b"{\"ok\":{\"pid\":3,\"signal\":0,\"bytes\":4}}\n\x7fEL")
            .unwrap();
        thread::sleep(Duration::from_millis(50));
        g.write_all(b"F\n").unwrap();
        assert_eq!(read_command(&g), "pstop 999\n");
        g.write_all(b"{\"error\":\"no process 999\"}\n").unwrap();
        g.write_all(b"{\"event\":\"mystery\",\"x\":1}\n").unwrap();
        g
    });
    let ps = c.request("ps").unwrap();
    assert_eq!(ps.value(), Some(&serde_json::json!([{"pid": 0}])));
    assert_eq!(ps.payload(), None);
    let core = c.request("gcore 3").unwrap();
    assert_eq!(core.payload(), Some(&b"\x7fELF"[..]));
    assert_eq!(core.value().unwrap()["bytes"], 4);
    let err = c.request("pstop 999").unwrap();
    assert_eq!(err, Reply::Error("no process 999".into()));
    assert_eq!(err.clone().into_value(), Err("no process 999".into()));
    let _g = guest.join().unwrap();
    c.poll_events(Duration::from_millis(100)).unwrap();
    let events = c.take_events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0], Event::Hello { version: 1 });
    assert_eq!(
        events[1],
        Event::Core(CoreDump {
            pid: 3,
            signal: 11,
            data: b"ab\ncd".to_vec()
        })
    );
    assert!(matches!(&events[2], Event::Other { value, payload: None } if value["x"] == 1));
    assert!(c.take_events().is_empty());
}

#[test]
fn a_silent_guest_times_out_and_a_resync_recovers() {
    let (mut c, mut g) = pair();
    let started = Instant::now();
    let err = c
        .request_timeout("ps", Duration::from_millis(200))
        .unwrap_err();
    assert!(err.to_string().contains("no reply"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Out of step now: the late reply must not answer the next request.
    g.write_all(b"{\"ok\":\"late\"}\n").unwrap();
    let err = c.request("ps").unwrap_err().to_string();
    assert!(err.contains("out of step"), "{err}");
    c.resync(Duration::from_millis(100), Duration::from_secs(5))
        .unwrap();
    assert!(c.broken().is_none());
    let guest = thread::spawn(move || {
        read_command(&g);
        read_command(&g);
        g.write_all(b"{\"ok\":\"fresh\"}\n").unwrap();
        g
    });
    let r = c.request("stats").unwrap();
    assert_eq!(r.value(), Some(&Value::String("fresh".into())));
    drop(guest.join().unwrap());
    // The guest is gone: an error, and the connection knows it closed.
    assert!(c.request("ps").is_err());
    assert!(c.is_closed());
}

#[test]
fn malformed_messages_are_errors_never_panics() {
    let cases: [&[u8]; 7] = [
        b"not json\n",
        b"[1,2]\n",
        b"{\"neither\":1}\n",
        b"{\"ok\":{\"bytes\":3}}\nabcX",
        b"{\"ok\":{\"bytes\":-1}}\n",
        b"{\"ok\":{\"bytes\":\"many\"}}\n",
        b"{\"ok\":1",
    ];
    for case in cases {
        let (mut c, mut g) = pair();
        g.write_all(case).unwrap();
        let r = c.request_timeout("ps", Duration::from_millis(300));
        assert!(r.is_err(), "{:?} gave {r:?}", String::from_utf8_lossy(case));
        assert!(c.broken().is_some());
    }
    // A reply nobody asked for is an error when polling for events.
    let (mut c, mut g) = pair();
    g.write_all(b"{\"ok\":1}\n").unwrap();
    assert!(c.poll_events(Duration::from_millis(200)).is_err());
    // Bad commands never reach the guest.
    let (mut c, _g) = pair();
    assert!(c.request("ps\nps").is_err());
    assert!(c.request("  ").is_err());
    assert!(c.broken().is_none());
}

#[test]
fn an_event_arriving_in_pieces_is_read_whole() {
    let (mut c, mut g) = pair();
    let guest = thread::spawn(move || {
        g.write_all(b"{\"event\":\"core\",\"pid\":2,").unwrap();
        thread::sleep(Duration::from_millis(150));
        g.write_all(b"\"signal\":6,\"bytes\":3}\nxy").unwrap();
        thread::sleep(Duration::from_millis(150));
        g.write_all(b"z\n").unwrap();
        g
    });
    let got = c
        .wait_event(|e| matches!(e, Event::Core(_)), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        got,
        Some(Event::Core(CoreDump {
            pid: 2,
            signal: 6,
            data: b"xyz".to_vec()
        }))
    );
    let _g = guest.join().unwrap();
    assert_eq!(
        c.wait_event(|_| true, Duration::from_millis(100)).unwrap(),
        None
    );
}

#[test]
fn connect_waits_for_the_socket_and_gives_up_clearly() {
    let dir = std::env::temp_dir().join(format!("spindle-ctl-connect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("late.sock");
    let p = path.clone();
    let server = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let l = UnixListener::bind(&p).unwrap();
        let (mut s, _) = l.accept().unwrap();
        read_command(&s);
        s.write_all(b"{\"ok\":\"hi\"}\n").unwrap();
    });
    let mut c = CtlConnection::connect_timeout(&path, Duration::from_secs(10)).unwrap();
    assert_eq!(c.path(), path);
    assert!(c.request("help").unwrap().is_ok());
    server.join().unwrap();
    let missing = dir.join("never.sock");
    let err = CtlConnection::connect_timeout(&missing, Duration::from_millis(100))
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("never.sock"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gcore_gets_the_long_timeout() {
    assert_eq!(timeout_for("gcore 3"), GCORE_TIMEOUT);
    assert_eq!(timeout_for(" ps"), DEFAULT_TIMEOUT);
    assert_eq!(timeout_for(""), DEFAULT_TIMEOUT);
    assert_eq!(
        Reply::Error("x\"y".into()).json_line(),
        "{\"error\":\"x\\\"y\"}"
    );
}
