//! The client's end-of-test output: iperf3's summary table and the `end`
//! section of its JSON document.

use super::*;

impl Client {
    pub(super) fn print_summary(&self, directions: &[Direction]) {
        println!("{SEPARATOR}");
        let retransmits = directions.iter().any(|d| d.retransmits);
        println!("{}", report::header(self.o.bidir, retransmits, false));
        for d in directions {
            let role = self.role(d.we_send);
            for &(i, sent, received, retrans) in &d.rows {
                let who = Who::Stream(self.streams[i].fd());
                print_totals(who, role, d, (sent, received), retrans);
            }
            if self.o.parallel > 1 {
                print_totals(
                    Who::Sum,
                    role,
                    d,
                    (d.sent(), d.received()),
                    d.retransmitted(),
                );
            }
        }
        println!();
        println!("iperf Done.");
    }

    pub(super) fn end_json(&self, directions: &[Direction]) -> Value {
        let mut end = Map::new();
        if directions.is_empty() {
            return Value::Object(end);
        }
        let mut streams = Vec::new();
        for d in directions {
            let flag = d.we_send;
            for &(i, sent, received, retrans) in &d.rows {
                let s = &self.streams[i];
                let mut sender = json!({
                    "socket": s.fd(), "start": 0, "end": d.sender_time, "seconds": d.sender_time,
                    "bytes": sent, "bits_per_second": bits_per_second(sent, d.sender_time), "sender": flag,
                });
                if d.retransmits {
                    sender["retransmits"] = json!(retrans);
                    if d.we_send {
                        let mean = s.sum_rtt.checked_div(s.rtt_samples).unwrap_or(0);
                        sender["max_snd_cwnd"] = json!(s.max_cwnd);
                        sender["max_snd_wnd"] = json!(s.max_snd_wnd);
                        sender["max_rtt"] = json!(s.max_rtt);
                        sender["min_rtt"] = json!(s.min_rtt);
                        sender["mean_rtt"] = json!(mean);
                    }
                }
                let receiver = json!({
                    "socket": s.fd(), "start": 0, "end": d.receiver_time, "seconds": d.receiver_time,
                    "bytes": received, "bits_per_second": bits_per_second(received, d.receiver_time), "sender": flag,
                });
                streams.push(json!({"sender": sender, "receiver": receiver}));
            }
            let mut sent = json!({
                "start": 0, "end": d.sender_time, "seconds": d.sender_time, "bytes": d.sent(),
                "bits_per_second": bits_per_second(d.sent(), d.sender_time), "sender": flag,
            });
            if d.retransmits {
                sent["retransmits"] = json!(d.retransmitted());
            }
            let received = json!({
                "start": 0, "end": d.receiver_time, "seconds": d.receiver_time, "bytes": d.received(),
                "bits_per_second": bits_per_second(d.received(), d.receiver_time), "sender": flag,
            });
            end.insert(self.sum_name(d.we_send, "sum_sent"), sent);
            end.insert(self.sum_name(d.we_send, "sum_received"), received);
        }
        end.insert("streams".into(), Value::Array(streams));
        let remote = self.theirs.as_ref().map_or([0.0; 3], |t| t.cpu);
        end.insert(
            "cpu_utilization_percent".into(),
            json!({
                "host_total": self.cpu[0], "host_user": self.cpu[1], "host_system": self.cpu[2],
                "remote_total": remote[0], "remote_user": remote[1], "remote_system": remote[2],
            }),
        );
        let remote_cc = self.theirs.as_ref().and_then(|t| t.congestion_used.clone());
        let last_we_send = directions.last().is_some_and(|d| d.we_send);
        let (snd, rcv) = if last_we_send {
            (Some(self.congestion.clone()), remote_cc)
        } else {
            (remote_cc, Some(self.congestion.clone()))
        };
        if let Some(c) = snd {
            end.insert("sender_tcp_congestion".into(), json!(c));
        }
        if let Some(c) = rcv {
            end.insert("receiver_tcp_congestion".into(), json!(c));
        }
        Value::Object(end)
    }
}

/// The sender and receiver lines of one stream (or of the sum) in the
/// summary: `(sent, received)` bytes, the sender's retransmits.
fn print_totals(who: Who, role: &'static str, d: &Direction, bytes: (u64, u64), retransmits: i64) {
    let extra = if d.retransmits {
        Extra::Retransmits(retransmits)
    } else {
        Extra::None
    };
    for (bytes, t, extra, tail) in [
        (bytes.0, d.sender_time, extra, "sender"),
        (bytes.1, d.receiver_time, Extra::None, "receiver"),
    ] {
        let row = Row {
            who,
            role,
            start: 0.0,
            end: t,
            bytes,
            seconds: t,
            extra,
            tail,
        };
        println!("{}", row.render());
    }
}
