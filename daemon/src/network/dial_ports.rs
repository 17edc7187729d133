//! Which local port outgoing TCP connections use.
//!
//! libp2p-tcp dials from a listen port (SO_REUSEPORT), which TCP hole punching needs. That only
//! works when the dialling process may bind that port: Linux refuses to share a port between
//! sockets of different uids (EADDRINUSE) and a port below `ip_unprivileged_port_start` to an
//! account without CAP_NET_BIND_SERVICE (EACCES). So when a TCP listener on a privileged port was
//! bound by root before the drop, TCP dials take fresh ports; in every other case they reuse.

use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent};

/// The TCP transport, with dials forced onto fresh ports when `fresh` is set.
pub(crate) struct DialPorts<T> {
    pub(crate) inner: T,
    pub(crate) fresh: bool,
}

impl<T: Transport + Unpin> Transport for DialPorts<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, mut opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        if self.fresh {
            opts.port_use = PortUse::New;
        }
        self.inner.dial(addr, opts)
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}
