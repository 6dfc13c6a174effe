//! How job inputs and outputs become bytes and back: postcard, with every
//! user `Serialize`/`Deserialize` panic turned into a codec error, and
//! shared objects gathered to travel as descriptors
//! ([`transfer::collecting`], [`transfer::receiving`]).

use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CodecStage, JobError};
use crate::panic;
use parpool_ipc::transfer::{self, Encoded};

/// Encodes `value` into a vector allocated once at its exact size.
pub(crate) fn encode_exact<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let size = postcard::serialize_with_flavor::<_, postcard::ser_flavors::Size, usize>(
        value,
        Default::default(),
    )?;
    postcard::to_extend(value, Vec::with_capacity(size))
}

pub(crate) fn codec_error(stage: CodecStage, e: impl std::fmt::Display) -> JobError {
    JobError::Codec {
        stage,
        message: e.to_string(),
    }
}

/// Runs user serde code (`Serialize`/`Deserialize` impls may panic),
/// turning a panic into a codec error for `stage`.
fn guarded<T>(stage: CodecStage, f: impl FnOnce() -> Result<T, JobError>) -> Result<T, JobError> {
    panic::catch(f).unwrap_or_else(|p| Err(codec_error(stage, format!("panicked: {p}"))))
}

/// Decodes `bytes`, a panicking `Deserialize` included, as a codec error.
/// `fds` are the descriptors that came with them (see [`parpool_ipc::transfer`]).
pub(crate) fn decode<T: DeserializeOwned>(
    stage: CodecStage,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T, JobError> {
    guarded(stage, || {
        transfer::receiving(fds, || postcard::from_bytes(bytes)).map_err(|e| {
            match transfer::take_failure() {
                Some(why) => codec_error(stage, why),
                None => codec_error(stage, e),
            }
        })
    })
}

/// Decodes one `T` from the front of `bytes`, with no descriptors (a
/// shared object in it fails the decode); returns it and the bytes after
/// it. `None` if it does not decode.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Option<(T, &[u8])> {
    guarded(CodecStage::DecodeOutput, || {
        transfer::receiving(Vec::new(), || postcard::take_from_bytes(bytes))
            .map_err(|e| codec_error(CodecStage::DecodeOutput, e))
    })
    .ok()
}

/// Encodes `value`, a panicking `Serialize` included, as a codec error.
/// Shared segments in it are collected to travel as descriptors.
pub(crate) fn encode<T: Serialize>(stage: CodecStage, value: &T) -> Result<Encoded, JobError> {
    guarded(stage, || {
        let (bytes, shared) = transfer::collecting(|| encode_exact(value));
        let bytes = bytes.map_err(|e| codec_error(stage, e))?;
        Ok(Encoded { bytes, shared })
    })
}

/// Encodes `value` for a worker on another machine: every `SharedBytes`
/// in it is written inline (a copy), and an `ipc` object, which cannot
/// leave this machine, fails the encode with [`JobError::Unsendable`]
/// naming it. A panicking `Serialize` is a codec error, as in [`encode`].
pub(crate) fn encode_by_value<T: Serialize + ?Sized>(
    stage: CodecStage,
    value: &T,
) -> Result<Vec<u8>, JobError> {
    guarded(stage, || {
        // Called outside any collecting window, where shared objects write
        // themselves by value, or refuse.
        transfer::forget_refused();
        encode_exact(value).map_err(|e| match transfer::take_refused() {
            Some(object) => JobError::Unsendable {
                what: match stage {
                    CodecStage::EncodeOutput | CodecStage::DecodeOutput => crate::Payload::Output,
                    _ => crate::Payload::Input,
                },
                object: object.to_owned(),
            },
            None => codec_error(stage, e),
        })
    })
}
