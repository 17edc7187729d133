//! The control socket's wire format: length-delimited frames (big-endian u32 prefix, capped at
//! [`MAX_FRAME`]) holding MessagePack with named fields.
//!
//! Why MessagePack: binary (document chunks travel as `bin`, not as number arrays), maintained
//! (`rmp-serde`), self-describing (tagged enums work), and with named fields a newer daemon can add
//! an optional field without breaking older clients. tarpc's bundled bincode 1.x is unmaintained.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::service::MAX_FRAME;

/// MessagePack with field names, for `tokio_serde::Framed`.
pub struct NamedMsgPack<Item, SinkItem>(PhantomData<(Item, SinkItem)>);

impl<Item, SinkItem> Default for NamedMsgPack<Item, SinkItem> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Item, SinkItem: Serialize> tokio_serde::Serializer<SinkItem> for NamedMsgPack<Item, SinkItem> {
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, Self::Error> {
        rmp_serde::to_vec_named(item)
            .map(Bytes::from)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl<Item: for<'de> Deserialize<'de>, SinkItem> tokio_serde::Deserializer<Item> for NamedMsgPack<Item, SinkItem> {
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, Self::Error> {
        rmp_serde::from_slice(src).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Length-delimited framing with the frame cap applied on both read and write, so a hostile
/// 4 GiB length prefix is refused before any allocation.
pub fn framed<S: AsyncRead + AsyncWrite>(io: S) -> Framed<S, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec();
    Framed::new(io, codec)
}

/// A tarpc transport over any byte stream, in this crate's wire format.
pub fn transport<S, Item, SinkItem>(
    io: S,
) -> tarpc::serde_transport::Transport<S, Item, SinkItem, NamedMsgPack<Item, SinkItem>>
where
    S: AsyncRead + AsyncWrite,
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
{
    tarpc::serde_transport::new(framed(io), NamedMsgPack::default())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use tokio_serde::{Deserializer, Serializer};

    use super::*;
    use crate::event::{Event, EventBatch, EventEnvelope};
    use crate::types::{AddrSource, Direction};

    #[test]
    fn tagged_events_survive_the_wire() {
        let batch = EventBatch {
            events: vec![
                EventEnvelope {
                    seq: 7,
                    at_ms: 1,
                    event: Event::PeerConnected {
                        peer_id: "12D3".into(),
                        addr: "/ip4/1.2.3.4/tcp/1".into(),
                        direction: Direction::Inbound,
                    },
                },
                EventEnvelope {
                    seq: 8,
                    at_ms: 2,
                    event: Event::PeerDiscovered {
                        peer_id: "x".into(),
                        addrs: vec![],
                        source: AddrSource::Mdns,
                    },
                },
            ],
            head: 8,
            resync: false,
            instance: 42,
        };
        let mut codec = NamedMsgPack::<EventBatch, EventBatch>::default();
        let bytes = Pin::new(&mut codec).serialize(&batch).unwrap();
        let back: EventBatch = Pin::new(&mut codec).deserialize(&BytesMut::from(&bytes[..])).unwrap();
        assert_eq!(back, batch);
        let json = serde_json::to_value(&batch.events[0]).unwrap();
        assert_eq!(json["event"]["type"], "peer_connected");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut codec = NamedMsgPack::<EventBatch, EventBatch>::default();
        let r: Result<EventBatch, _> = Pin::new(&mut codec).deserialize(&BytesMut::from(&b"\xc1\xff\x00garbage"[..]));
        assert!(r.is_err());
    }
}
