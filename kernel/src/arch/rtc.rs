//! The CMOS real-time clock, read once at boot for the wall-clock time.
//!
//! Waits out an update in progress, reads the date and time registers
//! (BCD or binary, 12- or 24-hour, as status register B says) and converts
//! them to Unix seconds (UTC, as QEMU keeps it). No lock: boot CPU only.

use x86_64::instructions::port::Port;

fn read_register(register: u8) -> u8 {
    let mut index = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    // SAFETY: 0x70/0x71 are the CMOS index and data ports; the NMI-disable
    // bit (0x80) is left clear, as firmware leaves it.
    unsafe {
        index.write(register);
        data.read()
    }
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Seconds since the Unix epoch, or `None` if the clock reads nonsense.
pub fn read_unix_seconds() -> Option<u64> {
    for _ in 0..1_000_000 {
        if read_register(0x0a) & 0x80 == 0 {
            break;
        }
        core::hint::spin_loop();
    }
    let status_b = read_register(0x0b);
    let binary = status_b & 0x04 != 0;
    let decode = |value: u8| {
        if binary {
            value
        } else {
            (value & 0x0f) + (value >> 4) * 10
        }
    };
    let second = decode(read_register(0x00));
    let minute = decode(read_register(0x02));
    let hour_raw = read_register(0x04);
    let mut hour = decode(hour_raw & 0x7f);
    if status_b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let day = decode(read_register(0x07));
    let month = decode(read_register(0x08));
    let year = 2000 + i64::from(decode(read_register(0x09)));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, u32::from(month), u32::from(day));
    let seconds =
        days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second);
    u64::try_from(seconds).ok()
}
