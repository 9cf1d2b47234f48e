use super::*;

#[test]
fn cpu_is_utime_plus_stime_after_the_command_name() {
    let stat = "4242 (herd (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 3 0 100";
    assert_eq!(cpu_of_stat(stat), Some(Duration::from_millis(1750)));
    assert_eq!(cpu_of_stat("garbage"), None);
    assert!(cpu("self").is_ok());
}

#[test]
fn memory_reads_rss_and_peak() {
    let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
    assert_eq!(
        memory_of_status(status),
        Memory {
            rss: 1024 * 1024,
            hwm: 2048 * 1024
        }
    );
    let me = memory("self").unwrap();
    assert!(me.rss > 0 && me.hwm >= me.rss);
}

#[test]
fn counts_established_connections_to_a_port() {
    let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
        0: 0100007F:D431 0100007F:1F96 01 00000000:00000000 00:00000000 00000000     0        0 1\n   \
        1: 0100007F:D432 0100007F:1F96 06 00000000:00000000 00:00000000 00000000     0        0 2\n   \
        2: 0100007F:1F96 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3\n";
    // 0x1F96 = 8086: one client end established, one in TIME_WAIT, one server end.
    assert_eq!(established_in(table, 8086), 1);
    assert_eq!(established_in(table, 8087), 0);
}

#[test]
fn reads_the_open_files_limit() {
    assert!(open_files_limit().is_some_and(|n| n > 0));
}

#[test]
fn machine_cpu_is_busy_time_and_steal() {
    let stat = "cpu  100 5 50 1000 7 3 2 40 0 0\ncpu0 50 2 25 500 3 1 1 20 0 0\n";
    assert_eq!(
        machine_cpu_of(stat),
        Some((Duration::from_millis(1600), Duration::from_millis(400)))
    );
    assert!(machine_cpu().is_some());
}

#[test]
fn reads_listen_overflows() {
    let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 3 2472 2473\nIpExt: InNoRoutes\nIpExt: 0\n";
    assert_eq!(listen_overflows_of(netstat), Some(2472));
    assert_eq!(listen_overflows_of("IpExt: A\nIpExt: 1\n"), None);
    assert!(listen_overflows().is_some());
}
