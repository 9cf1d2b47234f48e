//! What the identity service and every proxy read from strangers: SPIFFE IDs
//! (`herd_identity::SpiffeId::parse`, policy patterns through `Matcher::parse`) and CSRs
//! (`herd_identity::inspect_csr`, the CA's check of what a workload sends), on arbitrary bytes.
//!
//! Properties, on any input:
//! - nothing panics, whatever the size or shape (a hostile CSR must not take the CA down);
//! - an accepted ID is exactly its text (IDs are refused, never normalized: two spellings must
//!   not name one workload), parses again to itself, and an exact pattern of it names it while a
//!   `/*` pattern of it does not (a prefix never names itself);
//! - an accepted CSR is within the size limit and names one ID that parses, and the CA would
//!   be signing for exactly that ID.
#![no_main]

use herd_identity::{CsrLimits, Matcher, SpiffeId, inspect_csr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = SpiffeId::parse(text) {
            assert_eq!(id.as_str(), text, "accepted IDs are not rewritten");
            assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
            let exact = Matcher::parse(text).expect("an ID is a pattern");
            assert!(exact.matches(&id));
            if let Ok(below) = Matcher::parse(&format!("{text}/*")) {
                assert!(!below.matches(&id), "{text}/* names {text} itself");
            }
        }
        let _ = Matcher::parse(text);
    }
    let limits = CsrLimits::default();
    if let Ok(request) = inspect_csr(data, &limits) {
        assert!(data.len() <= limits.max_der_bytes);
        let id = request.id();
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(id));
    }
});
