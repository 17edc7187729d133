//! rkyv encoding of stored values, and the one place they are decoded: always through
//! validated access (bytecheck), never `access_unchecked`, because the bytes come from a
//! file that a crash, a disk error or a person may have damaged.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::error::Fail;

/// Alignment of the scratch buffer misaligned values are copied into; every archived type
/// of the store needs at most 8.
const COPY_ALIGN: usize = 16;

pub(super) fn encode<T>(value: &T) -> Result<AlignedVec, Fail>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    // Serialising plain owned data cannot fail short of allocation failure; still no panic.
    rkyv::to_bytes::<rancor::Error>(value).map_err(|e| Fail::Heed(heed::Error::Encoding(Box::new(e))))
}

/// Validates `bytes` as an archived `T` and deserialises it. `table` and `key` only name the
/// value in the error.
pub(super) fn decode<T>(table: &'static str, key: impl FnOnce() -> String, bytes: &[u8]) -> Result<T, Fail>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    const { assert!(align_of::<T::Archived>() <= COPY_ALIGN) };
    // LMDB places values at 2-byte boundaries only, and rkyv's validator (rightly) rejects a
    // misaligned root, so such a value is first copied into an aligned buffer.
    let result = if (bytes.as_ptr() as usize).is_multiple_of(align_of::<T::Archived>()) {
        access_and_deserialize::<T>(bytes)
    } else {
        let mut aligned = AlignedVec::<COPY_ALIGN>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        access_and_deserialize::<T>(&aligned)
    };
    result.map_err(|e| Fail::Corrupt {
        table,
        key: key(),
        detail: e.to_string(),
    })
}

fn access_and_deserialize<T>(bytes: &[u8]) -> Result<T, rancor::Error>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let archived = rkyv::access::<T::Archived, rancor::Error>(bytes)?;
    rkyv::deserialize::<T, rancor::Error>(archived)
}
