//! The system clock, which only adapters read: the domains take a [`Clock`], so their tests
//! run leases and backoffs in virtual time.

use std::time::Duration;

use stemvault_vault::{Clock, Timestamp};

/// The time of day and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await
    }
}

#[doc(hidden)]
pub mod __macro_support {
    pub use stemvault_vault::{Clock, Timestamp};
}

/// Implement [`Clock`] for a function's adapter struct on the [`SystemClock`]:
/// `stemvault_aws::system_clock!(AwsPorts);`.
#[macro_export]
macro_rules! system_clock {
    ($ports:ty) => {
        impl $crate::clock::__macro_support::Clock for $ports {
            fn now(&self) -> $crate::clock::__macro_support::Timestamp {
                $crate::clock::__macro_support::Clock::now(&$crate::clock::SystemClock)
            }

            fn sleep(&self, duration: ::std::time::Duration) -> impl ::std::future::Future<Output = ()> + Send {
                $crate::clock::__macro_support::Clock::sleep(&$crate::clock::SystemClock, duration)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Adapter;

    crate::system_clock!(Adapter);

    #[tokio::test]
    async fn an_adapter_reads_the_time_of_day() {
        let before = Timestamp::now();
        let now = Adapter.now();
        let after = Timestamp::now();
        assert!(before <= now && now <= after, "{before:?} <= {now:?} <= {after:?}");
        // The time of day, not a clock that starts at zero.
        assert!(now.unix_seconds() > 1_700_000_000, "{now:?}");
        Adapter.sleep(Duration::ZERO).await;
    }
}
