//! A service's subscription to its endpoints from the control plane, and this proxy's registry
//! of them.
//!
//! The route stage takes a subscription when a request is first routed to its service
//! ([`Subscription::touch`]) and the snapshot follows its answers into the balancer, while the
//! connection to the control plane ([`super`]) builds snapshots. So this part lives apart, below
//! the route stage and the snapshot, and knows nothing of either: the stages that use it import
//! `control::subscription`, never `control` itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use herd_config::WeightedEndpoint;
use tokio::sync::{mpsc, watch};

use crate::balance::load::now_nanos;

/// The endpoints a subscription holds: those that may take new requests, each with its weight
/// and, for a meshed one, the identity it must present; `None` until the first update.
pub type Answer = Option<Arc<[WeightedEndpoint]>>;

/// What a service's subscription shares with the endpoints stream.
pub struct Subscription {
    pub(super) service: String,
    pub(super) tx: watch::Sender<Answer>,
    /// `now_nanos()` of the last use.
    pub(super) last_used: AtomicU64,
    /// Watched on the stream now.
    pub(super) active: AtomicBool,
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// A request is being routed to the service: make sure its endpoints are followed.
    pub fn touch(&self) {
        self.last_used.store(now_nanos(), Ordering::Relaxed);
        if !self.active.load(Ordering::Relaxed) && !self.active.swap(true, Ordering::AcqRel) {
            let _ = self.commands.send(Command::Watch(self.service.clone()));
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Answer> {
        self.tx.subscribe()
    }
}

pub(super) enum Command {
    Watch(String),
}

/// The subscriptions of this proxy, by service; shared by every snapshot.
pub struct Endpoints {
    subscriptions: Mutex<HashMap<String, Weak<Subscription>>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Endpoints {
    /// The subscription to `service`, made (inactive) if no snapshot holds one yet.
    pub fn subscription(&self, service: &str) -> Arc<Subscription> {
        let mut subs = self.subscriptions.lock().expect("subscriptions lock");
        subs.retain(|_, s| s.strong_count() > 0);
        if let Some(existing) = subs.get(service).and_then(Weak::upgrade) {
            return existing;
        }
        let sub = Arc::new(Subscription {
            service: service.to_owned(),
            tx: watch::Sender::new(None),
            last_used: AtomicU64::new(0),
            active: AtomicBool::new(false),
            commands: self.commands.clone(),
        });
        subs.insert(service.to_owned(), Arc::downgrade(&sub));
        sub
    }

    pub(super) fn get(&self, service: &str) -> Option<Arc<Subscription>> {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .get(service)
            .and_then(Weak::upgrade)
    }

    pub(super) fn active(&self) -> Vec<Arc<Subscription>> {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .values()
            .filter_map(Weak::upgrade)
            .filter(|s| s.active.load(Ordering::Acquire))
            .collect()
    }
}

/// Made by [`super::start`]'s caller before the first snapshot, so snapshots can hold subscriptions.
pub fn endpoints() -> (Arc<Endpoints>, EndpointsCommands) {
    let (commands, rx) = mpsc::unbounded_channel();
    (
        Arc::new(Endpoints {
            subscriptions: Mutex::default(),
            commands,
        }),
        EndpointsCommands(rx),
    )
}

/// The receiving end of subscriptions' commands, for [`super::start`].
pub struct EndpointsCommands(pub(super) mpsc::UnboundedReceiver<Command>);
