//! `bench net`'s pure parts: statistics, /proc parsing, rendering.

use super::*;

#[test]
fn summary_median_range_count() {
    let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
    assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
    assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    assert!(Summary::of(&[]).is_none());
    assert_eq!(s.cell(2), "2.00 [1.00–3.00], n=3");
    let l = Summary::of(&[4.0]).unwrap();
    assert_eq!(ratio_cell(Some(s), Some(l)), "0.50");
    assert_eq!(ratio_cell(None, Some(l)), "—");
}

#[test]
fn task_stat_names_may_hold_spaces_and_parentheses() {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime stime ...
    let line = "4242 (CPU 0/TCG) S 1 2 3 0 -1 4194368 10 0 0 0 1234 56 0 0 20 0 3 0 100 0 0";
    assert_eq!(parse_task_stat(line), Some(1290));
    let odd = "7 (a) b (c)) R 1 2 3 0 -1 0 0 0 0 0 7 8 0 0";
    assert_eq!(parse_task_stat(odd), Some(15));
    assert_eq!(parse_task_stat("7 (short) R 1 2"), None);
    assert_eq!(parse_task_stat("no parenthesis"), None);
}

#[test]
fn thread_split_sums_by_name_over_the_wall_time() {
    let t = |tid, comm: &str, ticks| TaskTicks {
        tid,
        comm: comm.into(),
        ticks,
    };
    let before = vec![
        t(1, "qemu-system-x86", 100),
        t(2, "CPU 0/TCG", 50),
        t(3, "worker", 5),
    ];
    let after = vec![
        t(1, "qemu-system-x86", 300),
        t(2, "CPU 0/TCG", 850),
        t(4, "worker", 100),
    ];
    // 100 ticks/s over 10 s: 1000 ticks = one core.
    let split = thread_split(&before, &after, 100.0, 10.0);
    assert_eq!(split["qemu-system-x86"], 20.0);
    assert_eq!(split["CPU 0/TCG"], 80.0);
    // A thread born during the test counts from zero.
    assert_eq!(split["worker"], 10.0);
    assert!(thread_split(&before, &after, 100.0, 0.0).is_empty());
}

#[test]
fn proc_stat_busy_and_total() {
    let text = "cpu  100 10 50 800 20 5 5 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
    assert_eq!(parse_proc_stat(text), Some((180, 1000)));
    assert_eq!(parse_proc_stat("cpu0 1 2 3\n"), None);
    assert_eq!(parse_proc_stat("cpu  1 2 3\n"), None);
}

fn lwp(pid: u64, id: u64, label: &str, cpu_ms: u64) -> LwpSample {
    LwpSample {
        pid,
        id,
        label: label.into(),
        cpu_ms,
    }
}

#[test]
fn lwps_parse_from_the_control_channel_reply() {
    let v = json!({"pid": 2, "lwps": [
        {"id": 1, "tid": 2, "name": "iperf", "kernel_only": false, "cpu_ms": 40},
        {"id": 2, "tid": 3, "name": "vnet0-rx0", "kernel_only": true, "cpu_ms": 1200}
    ]});
    let l = parse_lwps(&v, 2).unwrap();
    assert_eq!(l[0], lwp(2, 1, "iperf (user)", 40));
    assert_eq!(l[1], lwp(2, 2, "vnet0-rx0 (kernel-only)", 1200));
    let k = json!({"pid": 0, "lwps": [
        {"id": 2, "name": "idle/0", "kernel_only": true, "cpu_ms": 9}
    ]});
    assert_eq!(parse_lwps(&k, 2).unwrap()[0].label, "idle/0 (pid 0)");
    assert!(parse_lwps(&json!({"pid": 2}), 2).is_err());
    assert!(parse_lwps(&json!({"lwps": []}), 2).is_err());
    assert!(parse_lwps(&json!({"pid": 2, "lwps": [{"id": 1}]}), 2).is_err());
}

#[test]
fn lwp_tracker_counts_births_and_keeps_the_last_sample_of_the_dead() {
    let mut tr = LwpTracker::default();
    tr.record(vec![
        lwp(2, 1, "iperf (user)", 100),
        lwp(2, 2, "vnet0-rx0 (kernel-only)", 1000),
        lwp(0, 2, "idle/0 (pid 0)", 50_000),
    ]);
    // LWP 3 is born, then dies before the last sample.
    tr.record(vec![
        lwp(2, 1, "iperf (user)", 300),
        lwp(2, 2, "vnet0-rx0 (kernel-only)", 4000),
        lwp(2, 3, "iperf (user)", 500),
        lwp(0, 2, "idle/0 (pid 0)", 51_000),
    ]);
    tr.record(vec![
        lwp(2, 1, "iperf (user)", 400),
        lwp(2, 2, "vnet0-rx0 (kernel-only)", 6000),
        lwp(0, 2, "idle/0 (pid 0)", 52_000),
    ]);
    let shares = tr.shares(10_000.0);
    assert_eq!(shares[0].label, "vnet0-rx0 (kernel-only)");
    assert_eq!(shares[0].pct, 50.0);
    // Same LWP id in another process: a different LWP.
    assert_eq!(
        (shares[1].label.as_str(), shares[1].pct),
        ("idle/0 (pid 0)", 20.0)
    );
    // (400 - 100) + 500 over 10 s.
    assert_eq!((shares[2].pct, shares[2].count), (8.0, 2));
}

#[test]
fn whole_numbers_have_no_negative_zero() {
    assert_eq!(whole(-0.3), "0");
    assert_eq!(whole(-1.2), "-1");
    assert_eq!(whole(2.6), "3");
}

#[test]
fn iperf3_reports_both_ends_cpu() {
    let r = json!({"end": {"cpu_utilization_percent": {"host_total": 1.5, "remote_total": 60.0}}});
    assert_eq!(iperf3_cpu(&r), (Some(1.5), Some(60.0)));
    assert_eq!(iperf3_cpu(&json!({"end": {}})), (None, None));
}

#[test]
fn systems_alternate_which_goes_first() {
    let both = [System::Spindle, System::Linux];
    assert_eq!(order(&both, 0), both);
    assert_eq!(order(&both, 1), [System::Linux, System::Spindle]);
    assert_eq!(order(&both, 2), both);
}

#[test]
fn linux_guest_addresses_follow_the_network() {
    assert_eq!(
        linux_net_words(IperfNet::User),
        "lg_ip=10.0.2.15/24 lg_gw=10.0.2.2"
    );
    assert_eq!(
        linux_net_words(IperfNet::Tap),
        "lg_ip=192.168.100.2/30 lg_gw=192.168.100.1"
    );
}

fn measured_test(direction: Direction, gbit: f64, lwps: bool) -> TestRecord {
    let mut threads = BTreeMap::new();
    threads.insert("CPU 0/TCG".to_string(), 80.0);
    threads.insert("qemu-system-x86".to_string(), 20.0);
    TestRecord {
        direction,
        outcome: Ok(Measured {
            gbit_per_s: gbit,
            retransmits: None,
            wall_s: 10.0,
            qemu_threads: threads,
            host_busy_pct: Some(60.0),
            host_iperf3_pct: Some(5.0),
            host_rest_pct: Some(15.0),
            guest_iperf3_pct: Some(50.0),
            guest_lwps: lwps.then(|| {
                Ok(vec![
                    LwpShare {
                        label: "vnet0-rx0 (kernel-only)".into(),
                        count: 1,
                        pct: 40.0,
                    },
                    LwpShare {
                        label: "iperf (user)".into(),
                        count: 2,
                        pct: 30.0,
                    },
                ])
            }),
        }),
        other_qemus: 0,
    }
}

fn context() -> ReportContext {
    ReportContext {
        date: "2026-11-26".into(),
        runs: 2,
        seconds: 10,
        net: IperfNet::User,
        smp: 1,
        mem_mib: 512,
        cpu: None,
        cpu_in_use: "max".into(),
        accel: Accel::Tcg,
        accel_reason: "forced".into(),
        qemu: "QEMU 7.2".into(),
        host: "AMD EPYC, 2 CPUs available".into(),
        host_iperf3: "iperf 3.12".into(),
        spindle_command: "qemu-system-x86_64 -kernel spindle".into(),
        linux_command: "qemu-system-x86_64 -kernel vmlinux".into(),
    }
}

#[test]
fn the_section_has_medians_ratios_failures_and_splits() {
    let boots = vec![
        BootRecord {
            system: System::Spindle,
            run: 1,
            ready: Ok(Duration::from_millis(500)),
            tests: vec![
                measured_test(Direction::HostToGuest, 1.0, true),
                measured_test(Direction::GuestToHost, 0.5, true),
            ],
            failure_tail: None,
        },
        BootRecord {
            system: System::Linux,
            run: 1,
            ready: Ok(Duration::from_millis(2000)),
            tests: vec![
                measured_test(Direction::HostToGuest, 2.0, false),
                measured_test(Direction::GuestToHost, 1.0, false),
            ],
            failure_tail: None,
        },
        BootRecord {
            system: System::Spindle,
            run: 2,
            ready: Ok(Duration::from_millis(700)),
            tests: vec![
                measured_test(Direction::HostToGuest, 3.0, true),
                TestRecord {
                    direction: Direction::GuestToHost,
                    outcome: Err("iperf3: the server has terminated\nmore".into()),
                    other_qemus: 1,
                },
            ],
            failure_tail: Some("panic: oops".into()),
        },
        BootRecord {
            system: System::Linux,
            run: 2,
            ready: Err("the guest did not print \"GUEST READY\" in time".into()),
            tests: vec![],
            failure_tail: Some("last".into()),
        },
    ];
    let s = render_section(&context(), &boots);
    assert!(
        s.contains("`-smp 1`, `-m 512M`, `-cpu max`, accelerator tcg."),
        "{s}"
    );
    assert!(
        s.contains("| host → guest, Gbit/s | 2.000 [1.000–3.000], n=2 | 2.000 [2.000–2.000], n=1 (1 of 2 failed) | 1.00 |"),
        "{s}"
    );
    assert!(
        s.contains("| guest → host, Gbit/s | 0.500 [0.500–0.500], n=1 (1 of 2 failed) | 1.000 [1.000–1.000], n=1 (1 of 2 failed) | 0.50 |"),
        "{s}"
    );
    assert!(
        s.contains("| QEMU start → ready, s | 0.600 [0.500–0.700], n=2 | 2.000 [2.000–2.000], n=1 (1 of 2 failed) | 0.30 |"),
        "{s}"
    );
    assert!(
        s.contains("- Spindle run 2, guest → host: iperf3: the server has terminated\n"),
        "{s}"
    );
    assert!(s.contains("- Linux run 2: no ready line"), "{s}");
    assert!(
        s.contains(
            "| Spindle | host → guest | 2 | CPU 0/TCG 80, qemu-system-x86 20 | 100 | 5 | 15 | 60 |"
        ),
        "{s}"
    );
    assert!(
        s.contains("| host → guest | 2 | vnet0-rx0 (kernel-only) 40, iperf (user) 30 | 30 |"),
        "{s}"
    );
    assert!(s.contains("- Spindle, host → guest (2.000 Gbit/s): QEMU used 100 % of a host core (CPU 0/TCG 80 %, qemu-system-x86 20 %), 0.50 host-core-seconds per Gbit; the host was 60 % busy (its iperf3 5 %, everything else 15 % of a core). The guest's iperf server reports its own process CPU as 50 % of the guest's CPU. In the guest (1 CPU): the kernel-only workers 40 % (vnet0-rx0 40 %), the iperf user LWPs 30 %, idle 0 %, other kernel LWPs 0 %, not attributed to an LWP 30 %.\n"), "{s}");
    assert!(s.contains("- Linux, guest → host (1.000 Gbit/s)"), "{s}");
    assert!(
        s.contains("(1.000 Gbit/s): QEMU used 100 % of a host core (CPU 0/TCG 80 %, qemu-system-x86 20 %), 1.00 host-core-seconds per Gbit; the host was 60 % busy (its iperf3 5 %, everything else 15 % of a core). The guest's iperf server reports its own process CPU as 50 % of the guest's CPU.\n"),
        "{s}"
    );
    assert!(s.contains("1 test(s) ran while another QEMU"), "{s}");
    assert!(
        s.contains("    qemu-system-x86_64 -kernel vmlinux\n"),
        "{s}"
    );

    // host_rest_pct is 15 in every measured test.
    assert!(
        s.contains("Host noise: in 5 of 5 tests, work other than QEMU and the host's iperf3 took more than 10 % of a host core (up to 15 %)"),
        "{s}"
    );
    let records = records_json(&boots);
    assert_eq!(
        records[2]["tests"][1]["outcome"]["error"]
            .as_str()
            .and_then(|e| e.lines().next()),
        Some("iperf3: the server has terminated")
    );
    assert_eq!(
        records[0]["tests"][0]["outcome"]["guest_lwps"][1]["count"],
        2
    );
    assert!(records[3]["ready_s"].is_null());

    let f = render_failures(&boots);
    assert!(
        f.contains("== Spindle run 2: guest → host: iperf3: the server has terminated"),
        "{f}"
    );
    assert!(f.contains("panic: oops"), "{f}");
    assert!(f.contains("== Linux run 2: no ready line"), "{f}");
    assert!(!f.contains("run 1"), "{f}");
}

#[test]
fn one_system_alone_has_no_ratio() {
    let boots = vec![BootRecord {
        system: System::Linux,
        run: 1,
        ready: Ok(Duration::from_secs(2)),
        tests: vec![measured_test(Direction::HostToGuest, 2.0, false)],
        failure_tail: None,
    }];
    let s = render_section(&context(), &boots);
    assert!(
        s.contains("| host → guest, Gbit/s | not run | 2.000 [2.000–2.000], n=1 | — |"),
        "{s}"
    );
    assert!(
        s.contains("| guest → host, Gbit/s | not run | no result (1 of 1 failed) | — |"),
        "{s}"
    );
}
