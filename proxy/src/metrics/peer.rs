//! The `tls`, `client_identity` and `server_identity` labels: what mutual TLS proved about the
//! other end of a response or an opaque connection.
//!
//! Identities are bounded (one SPIFFE ID per ServiceAccount), but they are not known when a
//! route is installed, and most traffic of most proxies is plaintext. So the plaintext series
//! stay resolved up front as before, and an identity's series are resolved the first time that
//! identity is seen on a route (or an opaque service) and kept with its other handles, in a short
//! list scanned under a lock: identities per route are few, and a lookup is a few string
//! comparisons, not a registry lookup.

use std::sync::Mutex;

use herd_identity::SpiffeId;

/// What mutual TLS proved about the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPeer<'a> {
    /// Plaintext, or no endpoint was tried: `tls="false"`, both identities empty.
    Plaintext,
    /// An inbound client that came over mutual TLS, with its verified SPIFFE ID.
    Client(&'a SpiffeId),
    /// A meshed endpoint reached over mutual TLS, with the SPIFFE ID it had to present.
    Server(&'a SpiffeId),
}

impl<'a> TlsPeer<'a> {
    /// An inbound client: over mutual TLS when it has an identity.
    pub fn client(identity: Option<&'a SpiffeId>) -> Self {
        identity.map_or(TlsPeer::Plaintext, TlsPeer::Client)
    }

    /// An endpoint: over mutual TLS when it is meshed (has an expected identity).
    pub fn server(identity: Option<&'a SpiffeId>) -> Self {
        identity.map_or(TlsPeer::Plaintext, TlsPeer::Server)
    }

    /// Which side proved which identity; `None` for plaintext.
    pub(super) fn identified(self) -> Option<(Side, &'a str)> {
        match self {
            TlsPeer::Plaintext => None,
            TlsPeer::Client(id) => Some((Side::Client, id.as_str())),
            TlsPeer::Server(id) => Some((Side::Server, id.as_str())),
        }
    }
}

/// Whose identity a series carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Server,
}

/// The values of plaintext's labels, in the order of [`super::families::PEER`]
/// (`client_identity`, `tls`, `server_identity`).
pub(super) const PLAINTEXT: [&str; 3] = ["", "false", ""];

/// The values of the labels of `identity` on `side`, in the same order.
pub(super) fn labels(side: Side, identity: &str) -> [&str; 3] {
    match side {
        Side::Client => [identity, "true", ""],
        Side::Server => ["", "true", identity],
    }
}

/// Handles resolved per identity, each the first time it is seen, kept until the owner drops
/// (which then removes their series, see [`ByIdentity::drain`]).
pub(super) struct ByIdentity<T>(Mutex<Vec<(Side, Box<str>, T)>>);

impl<T> Default for ByIdentity<T> {
    fn default() -> Self {
        ByIdentity(Mutex::new(Vec::new()))
    }
}

impl<T> ByIdentity<T> {
    /// Runs `f` on the entry of `identity` on `side`, made with `make` if it is the first time.
    pub(super) fn with<R>(
        &self,
        (side, identity): (Side, &str),
        make: impl FnOnce() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> R {
        let mut entries = self.0.lock().expect("metrics lock poisoned");
        let index = match entries
            .iter()
            .position(|(s, id, _)| *s == side && **id == *identity)
        {
            Some(index) => index,
            None => {
                entries.push((side, identity.into(), make()));
                entries.len() - 1
            }
        };
        f(&mut entries[index].2)
    }

    /// Every entry, taken out (for the owner's `Drop`).
    pub(super) fn drain(&mut self) -> Vec<(Side, Box<str>, T)> {
        std::mem::take(self.0.get_mut().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many identities have entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.lock().expect("metrics lock poisoned").len()
    }
}
