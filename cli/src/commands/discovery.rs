//! `firmactl discovery`: show mDNS/DHT state, switch mDNS, or start a DHT bootstrap.

use clap::{Args, ValueEnum};
use firma_ipc::types::{DiscoveryChange, DiscoveryState};

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct DiscoveryArgs {
    /// Switch local-network discovery (mDNS) on or off.
    #[arg(long, value_enum, value_name = "on|off")]
    pub mdns: Option<OnOff>,
    /// Start a Kademlia bootstrap now (finds more peers through the configured bootstrap nodes).
    #[arg(long)]
    pub bootstrap: bool,
}

impl DiscoveryArgs {
    /// The change asked for, or `None` when the command only looks.
    pub fn change(&self) -> Option<DiscoveryChange> {
        if self.mdns.is_none() && !self.bootstrap {
            return None;
        }
        Some(DiscoveryChange {
            mdns: self.mdns.map(|m| m == OnOff::On),
            bootstrap_now: self.bootstrap,
        })
    }
}

pub async fn run(session: &Session, out: Output, args: DiscoveryArgs) -> Result<(), CliError> {
    let bootstrap = args.bootstrap;
    // Looking goes through `status` so that only real changes reach the daemon's audit log.
    let state = match args.change() {
        Some(change) => {
            session
                .call(|c, ctx| async move { c.discovery(ctx, change).await })
                .await?
        }
        None => {
            session
                .call(|c, ctx| async move { c.status(ctx).await })
                .await?
                .discovery
        }
    };
    out.emit(&state, |s| render(s, bootstrap))
}

fn render(s: &DiscoveryState, bootstrap_started: bool) -> String {
    let mut text = format!(
        "mdns  {}\ndht   {}",
        format::on_off(s.mdns_enabled),
        format::on_off(s.dht_enabled)
    );
    if bootstrap_started {
        text.push_str("\nDHT bootstrap started (follow it with: firmactl watch)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_a_change_and_no_flags_only_look() {
        let look = DiscoveryArgs {
            mdns: None,
            bootstrap: false,
        };
        assert_eq!(look.change(), None);
        let off = DiscoveryArgs {
            mdns: Some(OnOff::Off),
            bootstrap: false,
        };
        assert_eq!(
            off.change(),
            Some(DiscoveryChange {
                mdns: Some(false),
                bootstrap_now: false
            })
        );
        let boot = DiscoveryArgs {
            mdns: None,
            bootstrap: true,
        };
        assert_eq!(
            boot.change(),
            Some(DiscoveryChange {
                mdns: None,
                bootstrap_now: true
            })
        );
    }

    #[test]
    fn shows_both_mechanisms() {
        let s = DiscoveryState {
            mdns_enabled: true,
            dht_enabled: false,
        };
        assert_eq!(render(&s, false), "mdns  on\ndht   off");
    }
}
