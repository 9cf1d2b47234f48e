use std::ffi::OsString;
use std::path::{Path, PathBuf};

use herd_config::ConfigError;
use notify::event::{AccessKind, CreateKind, Flag, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind};

use super::{Rejected, concerns, watched_names};

fn names(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

fn event(kind: EventKind, paths: &[&str]) -> Event {
    paths
        .iter()
        .fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
}

const RENAMED_TO: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::To));
const WRITTEN: EventKind = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));

#[test]
fn a_plain_file_is_watched_by_its_own_name() {
    assert_eq!(
        watched_names(Path::new("/etc/herd/herd.yaml"), None),
        names(&["herd.yaml"])
    );
    assert_eq!(
        watched_names(Path::new("herd.yaml"), None),
        names(&["herd.yaml"])
    );
}

#[test]
fn a_symlink_adds_its_first_step_when_that_is_in_the_same_directory() {
    let file = Path::new("/etc/herd/herd.yaml");
    // A ConfigMap volume.
    assert_eq!(
        watched_names(file, Some(Path::new("..data/herd.yaml"))),
        names(&["herd.yaml", "..data"])
    );
    assert_eq!(
        watched_names(file, Some(Path::new("./..data/herd.yaml"))),
        names(&["herd.yaml", "..data"])
    );
    // A sibling file.
    assert_eq!(
        watched_names(file, Some(Path::new("mesh-v2.yaml"))),
        names(&["herd.yaml", "mesh-v2.yaml"])
    );
    // Elsewhere: nothing in this directory to watch but the link itself.
    for elsewhere in ["../other/herd.yaml", "/srv/herd.yaml"] {
        assert_eq!(
            watched_names(file, Some(Path::new(elsewhere))),
            names(&["herd.yaml"]),
            "{elsewhere}"
        );
    }
}

#[test]
fn events_about_the_file_or_its_data_symlink_count_and_others_do_not() {
    let watched = names(&["herd.yaml", "..data"]);
    // An editor's or kubectl's rename over the file, with or without the directory.
    assert!(concerns(
        &event(RENAMED_TO, &["/etc/herd/herd.yaml"]),
        &watched
    ));
    assert!(concerns(&event(RENAMED_TO, &["./herd.yaml"]), &watched));
    assert!(concerns(
        &event(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["/etc/herd/.herd.yaml.swp", "/etc/herd/herd.yaml"]
        ),
        &watched
    ));
    assert!(concerns(
        &event(WRITTEN, &["/etc/herd/herd.yaml"]),
        &watched
    ));
    assert!(concerns(
        &event(
            EventKind::Remove(RemoveKind::File),
            &["/etc/herd/herd.yaml"]
        ),
        &watched
    ));
    // A ConfigMap update: `..data_tmp` renamed over `..data`.
    assert!(concerns(
        &event(RENAMED_TO, &["/etc/herd/..data"]),
        &watched
    ));
    assert!(!concerns(
        &event(
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            &["/etc/herd/..data_tmp"]
        ),
        &watched
    ));
    assert!(!concerns(
        &event(
            EventKind::Create(CreateKind::Folder),
            &["/etc/herd/..2026_01_02"]
        ),
        &watched
    ));
    // The proxy's own log beside the config, and other files.
    assert!(!concerns(
        &event(WRITTEN, &["/etc/herd/herd.log"]),
        &watched
    ));
    assert!(!concerns(
        &event(
            EventKind::Create(CreateKind::File),
            &["/etc/herd/herd.yaml.bak"]
        ),
        &watched
    ));
    // Reading the file.
    assert!(!concerns(
        &event(EventKind::Access(AccessKind::Any), &["/etc/herd/herd.yaml"]),
        &watched
    ));
    // The watcher lost events: look again.
    assert!(concerns(
        &Event::new(EventKind::Other).set_flag(Flag::Rescan),
        &watched
    ));
}

/// An error naming `file`, standing for a file that could not be read.
fn error_in(file: &str) -> ConfigError {
    herd_config::parse("services: 1\n", file).unwrap_err()
}

#[test]
fn one_rejected_content_is_news_once_until_a_valid_file_is_read() {
    let mut rejected = Rejected::default();
    let broken = || Ok::<_, ConfigError>("services: [oops\n".to_owned());
    assert!(rejected.is_news(broken()));
    assert!(!rejected.is_news(broken()), "the same text again");
    assert!(!rejected.is_news(broken()));
    // Another mistake is news, and so is the first one after it.
    assert!(rejected.is_news(Ok("services: 7\n".to_owned())));
    assert!(rejected.is_news(broken()));
    // A file that cannot be read: once per error.
    assert!(rejected.is_news(Err(error_in("gone.yaml"))));
    assert!(!rejected.is_news(Err(error_in("gone.yaml"))));
    // After a valid file, the same mistake made again is news.
    assert!(rejected.is_news(broken()));
    rejected.forget();
    assert!(rejected.is_news(broken()));
    assert!(!rejected.is_news(broken()));
}
