use std::time::{Duration, SystemTime};

use super::*;
use crate::identity::tests::{credentials_from, issuer};

const WEB: &str = "spiffe://cluster.local/ns/mastodon/sa/web";
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_meshed_connection_is_retired_when_a_certificate_of_its_handshake_expires() {
    let ca = issuer();
    let made_with = Arc::new(credentials_from(&ca, &[], WEB, MINUTE));
    let own = made_with.leaf.not_after();
    let now = SystemTime::now();

    // The peer's certificate expires first: that is the end.
    let peer = own - Duration::from_secs(20);
    let mut trust = Trust::new(made_with.clone(), Some(peer));
    assert_eq!(trust.holds(now, Some(&made_with)), Ok(()));
    assert_eq!(
        trust.holds(peer - Duration::from_secs(1), Some(&made_with)),
        Ok(())
    );
    assert!(trust.holds(peer, Some(&made_with)).is_err());

    // This proxy's own certificate first: a renewal since does not extend the connection, and
    // with one in use the connection hands over HANDOVER early, so no request races the peer
    // closing it at the old certificate's end.
    let mut trust = Trust::new(made_with.clone(), Some(own + MINUTE));
    let renewed = Arc::new(credentials_from(&ca, &[], WEB, MINUTE * 10));
    let second = Duration::from_secs(1);
    assert_eq!(trust.holds(own - HANDOVER - second, Some(&renewed)), Ok(()));
    assert_eq!(
        trust.holds(own - HANDOVER + second, Some(&renewed)),
        Err("its certificate is about to expire and a renewed one is in use")
    );
    // Without a renewed certificate there is nothing better: it serves to the end.
    assert_eq!(trust.holds(own - second, Some(&made_with)), Ok(()));
    assert_eq!(
        trust.holds(own, Some(&renewed)),
        Err("a certificate of its handshake expired")
    );

    // This proxy without valid credentials.
    let mut trust = Trust::new(made_with, None);
    assert_eq!(
        trust.holds(now, None),
        Err("this proxy has no valid certificate")
    );
}

#[test]
fn a_meshed_connection_is_retired_when_a_root_it_was_made_under_leaves_the_bundle() {
    let (old, new) = (issuer(), issuer());
    let now = SystemTime::now();
    let made_with = Arc::new(credentials_from(&old, &[], WEB, MINUTE));
    let mut trust = Trust::new(made_with.clone(), None);

    // A renewal that keeps the roots, or adds one, keeps the connection.
    let same = Arc::new(credentials_from(&old, &[], WEB, MINUTE));
    assert_eq!(trust.holds(now, Some(&same)), Ok(()));
    let both = Arc::new(credentials_from(&old, &[&new], WEB, MINUTE));
    assert_eq!(trust.holds(now, Some(&both)), Ok(()));
    let from_new = Arc::new(credentials_from(&new, &[&old], WEB, MINUTE));
    assert_eq!(trust.holds(now, Some(&from_new)), Ok(()));
    // The old root gone: retired, even though no certificate expired.
    let only_new = Arc::new(credentials_from(&new, &[], WEB, MINUTE));
    assert_eq!(
        trust.holds(now, Some(&only_new)),
        Err("a root it was made under left the trust bundle")
    );

    // A connection made once both roots were trusted goes too when either leaves.
    let mut trust = Trust::new(both, None);
    assert!(trust.holds(now, Some(&only_new)).is_err());
}
