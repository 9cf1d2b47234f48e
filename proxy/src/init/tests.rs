use clap::Parser;

use super::iptables::failing_line;
use super::rules::line_at;
use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    options: Options,
}

fn options(args: &[&str]) -> Options {
    let argv = std::iter::once("init").chain(args.iter().copied());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{e}"))
        .options
}

fn refused(args: &[&str]) -> String {
    let argv = std::iter::once("init").chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(_) => panic!("{args:?} should be refused"),
        Err(e) => e.to_string().lines().next().unwrap_or_default().to_owned(),
    }
}

#[test]
fn the_default_rules() {
    let rules = Rules::new(&options(&[]), Family::V4);
    assert_eq!(
        rules.restore_input(&[0, 1]),
        "*nat
:HERD_INBOUND - [0:0]
:HERD_OUTBOUND - [0:0]
-A HERD_INBOUND -p tcp --dport 4191 -j RETURN
-A HERD_INBOUND -p tcp -j REDIRECT --to-ports 4143
-A HERD_OUTBOUND -m owner --uid-owner 2102 -j RETURN
-A HERD_OUTBOUND -o lo -j RETURN
-A HERD_OUTBOUND -p tcp -j REDIRECT --to-ports 4140
-A PREROUTING -p tcp -j HERD_INBOUND
-A OUTPUT -p tcp -j HERD_OUTBOUND
COMMIT
"
    );
    // Jumps already in place are not added again; the chains are refilled either way.
    let again = rules.restore_input(&[]);
    assert!(!again.contains("-A PREROUTING") && !again.contains("-A OUTPUT"));
    assert!(again.contains(":HERD_INBOUND - [0:0]\n"));
    assert_eq!(
        rules.jumps[1],
        ["OUTPUT", "-p", "tcp", "-j", "HERD_OUTBOUND"]
    );
}

#[test]
fn skip_lists_ports_and_cidrs_by_family() {
    let options = options(&[
        "--inbound-port",
        "15006",
        "--outbound-port",
        "15001",
        "--admin-port",
        "9901",
        "--proxy-uid",
        "1337",
        "--skip-inbound-ports",
        "22, 8000-8100",
        "--skip-outbound-ports",
        "5432",
        "--skip-outbound-cidrs",
        "10.0.0.0/8,fd00::/8,169.254.169.254,192.168.1.7/16",
    ]);
    let v4 = Rules::new(&options, Family::V4).chain_rules;
    assert_eq!(
        v4,
        [
            "-A HERD_INBOUND -p tcp --dport 9901 -j RETURN",
            "-A HERD_INBOUND -p tcp --dport 22 -j RETURN",
            "-A HERD_INBOUND -p tcp --dport 8000:8100 -j RETURN",
            "-A HERD_INBOUND -p tcp -j REDIRECT --to-ports 15006",
            "-A HERD_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
            "-A HERD_OUTBOUND -o lo -j RETURN",
            "-A HERD_OUTBOUND -p tcp --dport 5432 -j RETURN",
            "-A HERD_OUTBOUND -d 10.0.0.0/8 -j RETURN",
            "-A HERD_OUTBOUND -d 169.254.169.254/32 -j RETURN",
            "-A HERD_OUTBOUND -d 192.168.0.0/16 -j RETURN",
            "-A HERD_OUTBOUND -p tcp -j REDIRECT --to-ports 15001",
        ]
    );
    let v6 = Rules::new(&options, Family::V6).chain_rules;
    let cidrs: Vec<_> = v6.iter().filter(|r| r.contains(" -d ")).collect();
    assert_eq!(cidrs, ["-A HERD_OUTBOUND -d fd00::/8 -j RETURN"]);
}

#[test]
fn bad_flags_are_refused_with_what_was_wrong() {
    assert!(refused(&["--inbound-port", "0"]).contains("expected a port from 1 to 65535"));
    assert!(refused(&["--outbound-port", "70000"]).contains("expected a port from 1 to 65535"));
    assert!(refused(&["--skip-inbound-ports", "22,x"]).contains("got \"x\""));
    assert!(refused(&["--skip-outbound-ports", "90-80"]).contains("ends before it starts"));
    assert!(refused(&["--skip-outbound-cidrs", "10.0.0.0/33"]).contains("expected a CIDR"));
    assert!(refused(&["--backend", "iptables"]).contains("invalid value 'iptables'"));
    assert!(refused(&["--proxy-uid", "root"]).contains("--proxy-uid"));
    assert!(refused(&["--no-such-flag"]).contains("--no-such-flag"));
    let empty = options(&["--skip-inbound-ports", "", "--skip-outbound-cidrs", " "]);
    assert_eq!(
        (empty.skip_inbound_ports, empty.skip_outbound_cidrs),
        (PortList::default(), CidrList::default())
    );
}

#[test]
fn the_failing_line_is_read_from_every_variants_message() {
    // iptables-legacy-restore, iptables-nft-restore, and a refused argument (either).
    assert_eq!(failing_line("iptables-restore: line 7 failed"), Some(7));
    assert_eq!(
        failing_line(
            "iptables-restore v1.8.9 (nf_tables): line 12: RULE_APPEND failed (No such file or \
             directory): rule in chain HERD_OUTBOUND"
        ),
        Some(12)
    );
    assert_eq!(
        failing_line(
            "iptables-restore v1.8.9 (legacy): unknown option \"--uid-ownerX\"; Error occurred at line: 6"
        ),
        Some(6)
    );
    assert_eq!(failing_line("Permission denied (you must be root)"), None);
    assert_eq!(failing_line("a line of its own"), None);

    let input = Rules::new(&options(&[]), Family::V4).restore_input(&[]);
    assert_eq!(
        line_at(&input, 6),
        Some("-A HERD_OUTBOUND -m owner --uid-owner 2102 -j RETURN")
    );
    assert_eq!(line_at(&input, 1), Some("*nat"));
    assert_eq!(line_at(&input, 99), None);
    assert_eq!(line_at(&input, 0), None);
}
