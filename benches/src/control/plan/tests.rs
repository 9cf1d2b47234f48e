use std::collections::BTreeSet;

use super::*;

fn plan(dir: &Path, proxies: usize, services: usize, endpoints: usize) -> Plan {
    Plan::new(dir, proxies, services, endpoints, 10, 7).unwrap()
}

fn services_in(dir: &Path) -> Vec<herd_config::Service> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = fs::read_to_string(f).unwrap();
            herd_config::parse_mesh(&text, &f.display().to_string(), None)
                .unwrap()
                .services
        })
        .collect()
}

#[test]
fn every_proxy_watches_the_shared_service_and_distinct_others() {
    let dir = std::env::temp_dir().join(format!("plan-subs-{}", std::process::id()));
    let plan = plan(&dir, 500, 30, 5);
    for subs in &plan.subscriptions {
        assert_eq!(subs.len(), 10);
        assert_eq!(subs[0], 0);
        assert_eq!(subs.iter().collect::<BTreeSet<_>>().len(), 10);
        assert!(subs[1..].iter().all(|&s| (1..=30).contains(&s)));
    }
    let most = (1..=30).map(|s| plan.subscribers(s).len()).max().unwrap();
    assert_eq!(plan.subscribers(plan.rolling).len(), most);
    assert_eq!(plan.subscribers(0).len(), 500);
}

#[test]
fn the_files_are_mesh_files_with_every_service_and_distinct_addresses() {
    let dir = std::env::temp_dir().join(format!("plan-files-{}", std::process::id()));
    let plan = plan(&dir, 10, 250, 100);
    plan.write_all().unwrap();
    let services = services_in(&dir);
    assert_eq!(services.len(), 251);
    assert_eq!(services[0].name, SHARED);
    let addresses: BTreeSet<String> = services
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.address.to_string()))
        .collect();
    assert_eq!(addresses.len(), 251 * 100);
    assert!(addresses.iter().all(|a| a.starts_with("10.")));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn changes_add_and_remove_shared_endpoints_and_roll_one_service() {
    let dir = std::env::temp_dir().join(format!("plan-changes-{}", std::process::id()));
    let mut plan = plan(&dir, 10, 150, 4);
    plan.write_all().unwrap();
    let shared = |dir: &Path| -> Vec<String> {
        services_in(dir)[0]
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect()
    };
    assert_eq!(shared(&dir).len(), 4);
    let Change::Add(added) = plan.change_shared().unwrap() else {
        panic!("the first change adds")
    };
    assert!(shared(&dir).contains(&added));
    assert_eq!(shared(&dir).len(), 5);
    let Change::Remove(removed) = plan.change_shared().unwrap() else {
        panic!("the second change removes")
    };
    assert!(!shared(&dir).contains(&removed));
    assert!(shared(&dir).contains(&added));
    assert_eq!(shared(&dir).len(), 4);

    let rolling = plan.names[plan.rolling as usize].clone();
    for k in 1..=4 {
        assert_eq!(plan.roll().unwrap(), k);
    }
    assert!(plan.roll().is_err());
    let rolled: Vec<String> = services_in(&dir)
        .iter()
        .find(|s| s.name == rolling)
        .unwrap()
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(rolled, (1..=4).map(rolled_address).collect::<Vec<_>>());
    assert_eq!(
        rolled.iter().map(|a| rolled_step(a)).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3), Some(4)]
    );
    assert_eq!(rolled_step(&address(3, 0)), None);
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        3,
        "no temporary file left"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bounds_are_checked() {
    let dir = Path::new("/nonexistent");
    assert!(Plan::new(dir, 1, 0, 1, 1, 1).is_err());
    assert!(Plan::new(dir, 1, 1, MAX_ENDPOINTS + 1, 1, 1).is_err());
    assert!(Plan::new(dir, 1, 5, 1, 7, 1).is_err());
    assert!(Plan::new(dir, 1, 5, 1, 6, 1).is_ok());
}

#[test]
fn a_routing_change_sets_a_shared_service_setting_and_keeps_its_endpoints() {
    let dir = std::env::temp_dir().join(format!("plan-routing-{}", std::process::id()));
    let mut plan = plan(&dir, 10, 120, 3);
    plan.write_all().unwrap();
    let before = services_in(&dir)[0].clone();
    assert_eq!(plan.change_routing().unwrap(), 1);
    let after = services_in(&dir)[0].clone();
    assert_eq!(after.endpoints, before.endpoints);
    assert_eq!(
        after.limits.connect_timeout,
        std::time::Duration::from_secs(2)
    );
    assert_ne!(after.limits.connect_timeout, before.limits.connect_timeout);
    plan.change_routing().unwrap();
    assert_eq!(
        services_in(&dir)[0].limits.connect_timeout,
        std::time::Duration::from_secs(3)
    );
    fs::remove_dir_all(&dir).unwrap();
}
