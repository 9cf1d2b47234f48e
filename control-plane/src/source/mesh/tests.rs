use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

fn texts(files: &[(&str, &str)]) -> BTreeMap<PathBuf, std::io::Result<String>> {
    files
        .iter()
        .map(|(name, text)| (PathBuf::from(name), Ok(text.to_string())))
        .collect()
}

const WEB: &str =
    "services:\n  - name: web\n    authorities: [web]\n    endpoints: [10.0.0.1:3000]\n";
const API: &str = "services:\n  - name: api\n    authorities: [api]\n";

fn names(state: &MeshState) -> Vec<&str> {
    state.services.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn files_merge_in_name_order() {
    let mut mesh = MeshDir::new("d");
    let state = mesh.apply(texts(&[("b.yaml", WEB), ("a.yaml", API)]));
    assert_eq!(names(&state), ["api", "web"]);
    assert!(state.problems.is_empty());
}

#[test]
fn a_bad_file_keeps_its_last_good_version() {
    let mut mesh = MeshDir::new("d");
    mesh.apply(texts(&[("a.yaml", API), ("b.yaml", WEB)]));
    let state = mesh.apply(texts(&[
        ("a.yaml", API),
        ("b.yaml", "services:\n  - name: Web\n"),
    ]));
    assert_eq!(
        names(&state),
        ["api", "web"],
        "b.yaml's last good version stays"
    );
    assert_eq!(state.problems.len(), 1);
    assert!(
        state.problems[0]
            .message
            .starts_with("b.yaml:2:11: services[0].name: invalid service name `Web`"),
        "{}",
        state.problems[0]
    );
    // A file that was never good contributes nothing.
    let mut fresh = MeshDir::new("d");
    let state = fresh.apply(texts(&[("a.yaml", API), ("b.yaml", "services: [")]));
    assert_eq!(names(&state), ["api"]);
}

#[test]
fn a_name_defined_twice_names_both_files_and_the_first_wins() {
    let mut mesh = MeshDir::new("d");
    let again = "services:\n  - name: web\n    authorities: [web2]\n";
    let state = mesh.apply(texts(&[("a.yaml", WEB), ("b.yaml", again)]));
    assert_eq!(names(&state), ["web"]);
    assert_eq!(
        state.problems[0].message,
        "b.yaml: services[0].name: service `web` is already defined in a.yaml"
    );
    assert_eq!(state.services[0].authorities[0].as_str(), "web");
}

#[test]
fn an_authority_claimed_twice_is_a_clash() {
    let mut mesh = MeshDir::new("d");
    let other = "services:\n  - name: other\n    authorities: [WEB.]\n";
    let state = mesh.apply(texts(&[("a.yaml", WEB), ("b.yaml", other)]));
    assert_eq!(names(&state), ["web"]);
    assert!(
        state.problems[0]
            .message
            .contains("authority `web` is already claimed by service `web` in a.yaml"),
        "{}",
        state.problems[0]
    );
}

#[test]
fn a_removed_file_leaves_the_mesh() {
    let mut mesh = MeshDir::new("d");
    mesh.apply(texts(&[("a.yaml", API), ("b.yaml", WEB)]));
    let state = mesh.apply(texts(&[("a.yaml", API)]));
    assert_eq!(names(&state), ["api"]);
}

#[test]
fn only_visible_yaml_files_are_mesh_files() {
    assert!(is_mesh_file(Path::new("/m/web.yaml")));
    assert!(!is_mesh_file(Path::new("/m/web.yml.swp")));
    assert!(!is_mesh_file(Path::new("/m/..data")));
    assert!(!is_mesh_file(Path::new("/m/.web.yaml")));
    assert!(!is_mesh_file(Path::new("/m/herd.log")));
}

#[test]
fn the_example_mesh_directory_merges_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/mesh");
    let state = MeshDir::new(&dir).read().unwrap();
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    let names: Vec<&str> = state.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["pgbouncer", "redis", "web", "streaming"]);
}

#[test]
fn only_files_whose_text_changed_are_parsed_again() {
    let mut mesh = MeshDir::new("d");
    let first = mesh.apply(texts(&[("a.yaml", API), ("b.yaml", WEB)]));
    assert_eq!(mesh.parses(), 2);
    assert_eq!(
        mesh.apply(texts(&[("a.yaml", API), ("b.yaml", WEB)])),
        first
    );
    assert_eq!(mesh.parses(), 2, "nothing changed, nothing parsed");
    let web2 = WEB.replace("10.0.0.1", "10.0.0.2");
    let state = mesh.apply(texts(&[("a.yaml", API), ("b.yaml", &web2)]));
    assert_eq!(mesh.parses(), 3, "b.yaml alone");
    assert_eq!(names(&state), ["api", "web"]);
    assert_eq!(
        state.services[1].endpoints[0].address.to_string(),
        "10.0.0.2:3000"
    );

    // A refused text stays refused without a parse, and still names its problem.
    let bad = "services:\n  - name: Web\n";
    let once = mesh.apply(texts(&[("a.yaml", API), ("b.yaml", bad)]));
    let twice = mesh.apply(texts(&[("a.yaml", API), ("b.yaml", bad)]));
    assert_eq!(mesh.parses(), 4);
    assert_eq!(once, twice);
    assert_eq!(twice.problems.len(), 1);

    // A file that leaves and comes back with the same text is parsed again.
    mesh.apply(texts(&[("a.yaml", API)]));
    mesh.apply(texts(&[("a.yaml", API), ("b.yaml", WEB)]));
    assert_eq!(mesh.parses(), 5);
}
