//! herd-control and herd-proxy together: a real control plane, real proxies taking their
//! services from it, Puma behind them, on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herd_tests::control::{Control, herdctl, proxy_yaml};
use herd_tests::load::{Client, Tally};
use herd_tests::{Proxy, Puma, TIMEOUT, eventually};

/// A Rack app that says who it is in `x-endpoint`, as the kit's load tally reads it.
fn named(name: &str) -> String {
    format!(
        "run lambda {{ |env| [200, {{ 'content-type' => 'text/plain', 'x-endpoint' => '{name}' }}, ['{name}']] }}\n"
    )
}

fn web(endpoints: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    format!(
        "services:\n  - name: web\n    authorities: [web.local]\n    endpoints: [{}]\n",
        list.join(", ")
    )
}

/// Sends requests one after another on `clients` connections until told to stop.
fn steady(
    proxy: std::net::SocketAddr,
    clients: usize,
) -> (
    Arc<AtomicBool>,
    tokio::task::JoinSet<Vec<herd_tests::load::Outcome>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let stop = stop.clone();
        set.spawn(async move {
            let mut client = Client::new(proxy);
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) && outcomes.len() < 20_000 {
                outcomes.push(client.get("web.local", "/", &[]).await);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            outcomes
        });
    }
    (stop, set)
}

async fn finish(
    stop: Arc<AtomicBool>,
    mut set: tokio::task::JoinSet<Vec<herd_tests::load::Outcome>>,
) -> Tally {
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    while let Some(outcomes) = set.join_next().await {
        tally.outcomes.extend(outcomes.expect("load worker"));
    }
    tally
}

/// Waits until every request through `proxy` is answered by the app named `name`.
async fn moves_to(proxy: &Proxy, name: &str) {
    eventually(&format!("traffic to move to {name}"), TIMEOUT, || async {
        (answered_by(proxy, 5).await.by_endpoint().get(name) == Some(&5)).then_some(())
    })
    .await;
}

async fn answered_by(proxy: &Proxy, n: usize) -> Tally {
    herd_tests::load::fire(proxy.outbound(), "web.local", n, 2).await
}

#[tokio::test]
async fn a_mesh_change_reaches_the_proxy_and_moves_traffic() {
    let a = Puma::start(&named("a")).await;
    let b = Puma::start(&named("b")).await;
    let control = Control::start(&[("web.yaml", &web(&[a.addr()]))]).await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;

    let tally = answered_by(&proxy, 20).await;
    assert_eq!(
        tally.by_endpoint().get("a"),
        Some(&20),
        "{:?}",
        tally.statuses()
    );

    // The operator sees the proxy, the version it acknowledged and what it watches.
    let stat = control.herdctl(&["stat"]).await;
    assert_eq!(stat.code, Some(0), "{stat:?}");
    let line = stat
        .stdout
        .lines()
        .find(|l| l.starts_with("web-1"))
        .expect("web-1 listed");
    assert!(line.contains("mastodon") && line.ends_with("web"), "{line}");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields[2], fields[3],
        "the version sent is the version acked: {line}"
    );

    control.write("web.yaml", &web(&[b.addr()]));
    moves_to(&proxy, "b").await;

    // What the proxy was last sent, as an operator reads it.
    let config = control.herdctl(&["config", "web-1"]).await;
    assert_eq!(config.code, Some(0), "{config:?}");
    assert!(
        config.stdout.contains("name: web") && config.stdout.contains("web.local"),
        "{}",
        config.stdout
    );
    let unknown = control.herdctl(&["config", "nope"]).await;
    assert_eq!(unknown.code, Some(1));
    assert!(unknown.stderr.contains("no proxy `nope`"), "{unknown:?}");

    let metrics = proxy.admin_get("/metrics").await.text();
    assert!(metrics.contains("herd_control_connected 1"), "{metrics}");
    assert!(
        metrics.contains("herd_control_updates_total{kind=\"routing\",result=\"applied\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_mesh_file_is_refused_with_its_location_and_the_last_good_state_stays() {
    let a = Puma::start(&named("a")).await;
    let b = Puma::start(&named("b")).await;
    let control = Control::start(&[("web.yaml", &web(&[a.addr()]))]).await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;
    assert_eq!(
        answered_by(&proxy, 5).await.by_endpoint().get("a"),
        Some(&5)
    );

    let broken = format!("{}    limits: {{ connectTimeout: 0s }}\n", web(&[b.addr()]));
    control.write("web.yaml", &broken);
    let want = "web.yaml:5:31: services[0].limits.connectTimeout: must be more than 0s";
    let check = eventually("herdctl check to report the file", TIMEOUT, || async {
        let check = control.herdctl(&["check"]).await;
        (check.code == Some(1)).then_some(check)
    })
    .await;
    assert!(check.stdout.contains(want), "{}", check.stdout);
    assert!(control.log().contains(want), "logged with its location");
    // Unrelated churn in the directory, and the same broken text again: still one line.
    for i in 0..20 {
        std::fs::write(control.mesh_dir().join(format!("notes-{i}.txt")), "x").unwrap();
    }
    control.write("web.yaml", &broken);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(control.log().matches(want).count(), 1, "{}", control.log());
    let validate = herdctl(&["validate".as_ref(), control.mesh_dir().as_os_str()]).await;
    assert_eq!(validate.code, Some(64), "{validate:?}");
    assert!(validate.stdout.contains(want), "{}", validate.stdout);
    // The same file through herd-proxy --check gives the same words.
    let single = herdctl(&[
        "validate".as_ref(),
        control.mesh_dir().join("web.yaml").as_os_str(),
    ])
    .await;
    assert!(
        single
            .stdout
            .contains("services[0].limits.connectTimeout: must be more than 0s"),
        "{single:?}"
    );

    // Still a.
    assert_eq!(
        answered_by(&proxy, 10).await.by_endpoint().get("a"),
        Some(&10)
    );
    let metrics = control.metrics().await;
    assert!(
        metrics.contains("herd_control_source_problems{source=\"mesh\"} 1"),
        "{metrics}"
    );

    control.write("web.yaml", &web(&[b.addr()]));
    moves_to(&proxy, "b").await;
    assert_eq!(control.herdctl(&["check"]).await.code, Some(0));
}

#[tokio::test]
async fn a_service_defined_in_two_files_names_both_and_the_first_stays() {
    let a = Puma::start(&named("a")).await;
    let b = Puma::start(&named("b")).await;
    let control = Control::start(&[("a.yaml", &web(&[a.addr()]))]).await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;
    control.write("b.yaml", &web(&[b.addr()]));
    let check = eventually("the clash to be reported", TIMEOUT, || async {
        let check = control.herdctl(&["check"]).await;
        (check.code == Some(1)).then_some(check)
    })
    .await;
    assert!(
        check
            .stdout
            .contains("services[0].name: service `web` is already defined in"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("a.yaml"), "{}", check.stdout);
    assert_eq!(
        answered_by(&proxy, 10).await.by_endpoint().get("a"),
        Some(&10)
    );
}

#[tokio::test]
async fn a_state_the_proxy_refuses_is_reported_and_its_last_good_state_stays() {
    let a = Puma::start(&named("a")).await;
    let control = Control::start(&[("web.yaml", &web(&[a.addr()]))]).await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;
    assert_eq!(answered_by(&proxy, 5).await.ok(), 5);

    // Valid for the control plane, but it would take this proxy's own admin port.
    let clash = format!(
        "{}  - name: redis\n    protocol: opaque\n    listen: {}\n    endpoints: [127.0.0.1:6379]\n",
        web(&[a.addr()]),
        proxy.admin()
    );
    control.write("web.yaml", &clash);
    let stat = eventually("the refusal to show in herdctl stat", TIMEOUT, || async {
        let stat = control.herdctl(&["stat"]).await;
        stat.stdout.contains("refused:").then_some(stat)
    })
    .await;
    assert!(
        stat.stdout.contains(&format!(
            "services[1].listen: {} is already used by proxy.admin.listen",
            proxy.admin()
        )),
        "{}",
        stat.stdout
    );
    let check = control.herdctl(&["check"]).await;
    assert_eq!(check.code, Some(1), "{check:?}");
    assert!(
        check.stdout.contains("FAIL proxy web-1 refused routing"),
        "{}",
        check.stdout
    );
    let metrics = proxy.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("herd_control_updates_total{kind=\"routing\",result=\"refused\"} 1"),
        "{metrics}"
    );
    assert!(
        control
            .metrics()
            .await
            .contains("herd_control_verdicts_total{kind=\"routing\",result=\"nack\"} 1")
    );
    assert_eq!(
        answered_by(&proxy, 10).await.ok(),
        10,
        "the last good state serves"
    );

    control.write("web.yaml", &web(&[a.addr()]));
    eventually("the proxy to be unstuck", TIMEOUT, || async {
        (control.herdctl(&["check"]).await.code == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn traffic_never_stops_while_the_control_plane_is_killed_and_restarted() {
    let a = Puma::start(&named("a")).await;
    let b = Puma::start(&named("b")).await;
    let mut control = Control::start(&[("web.yaml", &web(&[a.addr()]))]).await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;
    let (stop, load) = steady(proxy.outbound(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;

    control.kill().await;
    eventually("the proxy to notice", TIMEOUT, || async {
        let metrics = proxy.admin_get("/metrics").await.text();
        metrics.contains("herd_control_connected 0").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        proxy.admin_get("/ready").await.status,
        200,
        "ready does not flap"
    );

    control.restart().await;
    eventually("the proxy to reconnect", TIMEOUT, || async {
        let metrics = proxy.admin_get("/metrics").await.text();
        metrics.contains("herd_control_connected 1").then_some(())
    })
    .await;
    let tally = finish(stop, load).await;
    assert!(tally.len() > 100, "{} requests", tally.len());
    assert!(
        tally.failures().is_empty(),
        "{:?}",
        tally.failures().first()
    );

    // The restarted replica had the same state: nothing new was applied on reconnect.
    let metrics = proxy.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("herd_control_updates_total{kind=\"routing\",result=\"applied\"} 1"),
        "{metrics}"
    );
    // And changes flow again.
    control.write("web.yaml", &web(&[b.addr()]));
    moves_to(&proxy, "b").await;
}

#[tokio::test]
async fn with_two_replicas_one_killed_mid_load_not_one_request_fails() {
    let a = Puma::start(&named("a")).await;
    let b = Puma::start(&named("b")).await;
    let first = Control::start(&[("web.yaml", &web(&[a.addr()]))]).await;
    let second = first.replica().await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&first, &second], "")).await;
    assert_eq!(answered_by(&proxy, 3).await.ok(), 3);

    // Which replica has it?
    let connected_to_first = first.herdctl(&["stat"]).await.stdout.contains("web-1");
    let (mut victim, survivor) = if connected_to_first {
        (first, second)
    } else {
        (second, first)
    };
    let (stop, load) = steady(proxy.outbound(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.kill().await;
    eventually(
        "the proxy to move to the other replica",
        TIMEOUT,
        || async {
            survivor
                .herdctl(&["stat"])
                .await
                .stdout
                .contains("web-1")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = finish(stop, load).await;
    assert!(tally.len() > 100, "{} requests", tally.len());
    assert!(
        tally.failures().is_empty(),
        "{:?}",
        tally.failures().first()
    );

    // The survivor serves changes.
    survivor.write("web.yaml", &web(&[b.addr()]));
    moves_to(&proxy, "b").await;
}

#[tokio::test]
async fn endpoints_are_watched_from_the_first_request_and_dropped_when_unused() {
    let a = Puma::start(&named("a")).await;
    let mesh = format!(
        "{}  - name: api\n    authorities: [api.local]\n    endpoints: [{}]\n",
        web(&[a.addr()]),
        a.addr()
    );
    let control = Control::start(&[("mesh.yaml", &mesh)]).await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], ", unwatchAfter: 1s")).await;
    let watching = || async {
        let stat = control.herdctl(&["stat"]).await;
        let line = stat
            .stdout
            .lines()
            .find(|l| l.starts_with("web-1"))
            .unwrap_or("")
            .to_owned();
        line.split_whitespace().nth(6).unwrap_or("").to_owned()
    };
    assert_eq!(watching().await, "", "nothing watched before a request");
    assert_eq!(
        answered_by(&proxy, 1).await.ok(),
        1,
        "the first request waits for the endpoints"
    );
    assert_eq!(watching().await, "web");
    eventually("web to be unwatched after 1s unused", TIMEOUT, || async {
        watching().await.is_empty().then_some(())
    })
    .await;
    // Used again: watched again, and served.
    assert_eq!(answered_by(&proxy, 3).await.ok(), 3);
    assert_eq!(watching().await, "web");
    let metrics = control.metrics().await;
    assert!(
        metrics.contains("herd_control_endpoint_watches 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn herdctl_validate_checks_a_directory_a_mesh_file_and_a_proxy_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        web(&["127.0.0.1:3000".parse().unwrap()]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "services:\n  - name: api\n    authorities: [api]\n",
    )
    .unwrap();
    let ok = herdctl(&["validate".as_ref(), dir.path().as_os_str()]).await;
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(
        ok.stdout.ends_with(": ok (2 files, 2 services)\n"),
        "{}",
        ok.stdout
    );

    std::fs::write(
        dir.path().join("c.yaml"),
        "services:\n  - name: x\n    protocl: http\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("d.yaml"), "services:\n  - name: api\n").unwrap();
    let bad = herdctl(&["validate".as_ref(), dir.path().as_os_str()]).await;
    assert_eq!(bad.code, Some(64), "{bad:?}");
    let lines: Vec<&str> = bad.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per problem: {}", bad.stdout);
    assert!(
        lines[0].contains(
            "c.yaml:3:5: services[0].protocl: unknown key `protocl` (did you mean `protocol`?)"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("d.yaml: services[0].name: service `api` is already defined in"),
        "{}",
        lines[1]
    );

    // A proxy's own file: herd-proxy --check's rules and words.
    let own = dir.path().join("proxy.yaml");
    std::fs::write(&own, "proxy:\n  control: { addresses: [] }\n").unwrap();
    let cli = herdctl(&["validate".as_ref(), own.as_os_str()]).await;
    let proxy = herd_tests::proxy::run(&["--config", own.to_str().unwrap(), "--check"]).await;
    assert_eq!(cli.code, Some(64));
    assert_eq!(proxy.code, Some(64));
    assert!(
        cli.stdout
            .contains("proxy.control.addresses: must list at least one address"),
        "{cli:?}"
    );
    assert!(
        proxy.stderr.contains(cli.stdout.trim()),
        "{}\n{}",
        proxy.stderr,
        cli.stdout
    );

    let usage = herdctl(&["stat", "--bogus"]).await;
    assert_eq!(usage.code, Some(64));
    assert_eq!(usage.stderr.lines().count(), 1, "{usage:?}");
}

#[tokio::test]
async fn a_configmap_update_of_the_mesh_directory_is_seen() {
    let a = Puma::start(&named("a")).await;
    let b = Puma::start(&named("b")).await;
    // A ConfigMap volume: `web.yaml -> ..data/web.yaml`, `..data -> ..2026_12_06_1`.
    let control = Control::stopped(&[]);
    let dir = control.mesh_dir();
    let version = |n: u32, yaml: &str| {
        let data = dir.join(format!("..2026_12_06_{n}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("web.yaml"), yaml).unwrap();
        data
    };
    version(1, &web(&[a.addr()]));
    std::os::unix::fs::symlink("..2026_12_06_1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/web.yaml", dir.join("web.yaml")).unwrap();
    let mut control = control;
    control.restart().await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;
    assert_eq!(
        answered_by(&proxy, 3).await.by_endpoint().get("a"),
        Some(&3)
    );

    // The kubelet's update: a new directory, a `..data_tmp` link to it renamed over `..data`.
    version(2, &web(&[b.addr()]));
    std::os::unix::fs::symlink("..2026_12_06_2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    moves_to(&proxy, "b").await;
    assert!(!control.log().contains("ERROR"), "{}", control.log());
}
