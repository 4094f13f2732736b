//! What can go wrong after a callback was accepted as valid input, and whether the provider's
//! retry can fix it: the shared use-case's errors ([`stemvault_vault::accept`]). Bad input
//! never gets here: the handler answers it with a 4xx.

pub use stemvault_vault::StoreError;
pub use stemvault_vault::accept::AcceptError;
pub use stemvault_vault::enqueue::EnqueueError;
