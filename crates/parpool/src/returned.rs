//! Errors a task returns, on their way across a process boundary: a task
//! may return `Result<T, E>` for any error type `E`. Where `E` is a serde
//! type (or `std::io::Error`) it comes back as itself; otherwise its
//! message and its chain of sources come back as an [`ErrorReport`], in
//! [`JobError::Returned`](crate::JobError::Returned).
//!
//! Which way an error takes is decided where `task!` expands, with the
//! concrete type in hand: the probes here pick an implementation by
//! auto-ref (the most capable one the type allows), so no bound on `E`
//! is ever needed and no error type is refused.

use std::error::Error;
use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorReport, JobError};

/// How a returned error crosses: its report, and the error itself encoded
/// when its type can be rebuilt on the other side.
#[doc(hidden)]
#[derive(Debug, Serialize, Deserialize)]
pub struct Returned {
    report: ErrorReport,
    #[serde(with = "serde_bytes")]
    typed: Option<Vec<u8>>,
}

/// The parts of a `Result` type, named through whatever alias a task's
/// signature used (`io::Result<T>`, `anyhow::Result<T>`).
#[doc(hidden)]
pub trait ResultParts {
    /// The value.
    type Ok;
    /// The error.
    type Err;
}

impl<T, E> ResultParts for Result<T, E> {
    type Ok = T;
    type Err = E;
}

/// Picks, for an error type `E`, how it is described and whether it can
/// travel as itself; `task!` calls it through auto-ref. Not part of the API.
#[doc(hidden)]
pub struct ErrorProbe<E>(PhantomData<fn() -> E>);

impl<E> ErrorProbe<E> {
    /// A probe for `E`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        ErrorProbe(PhantomData)
    }
}

impl<E> fmt::Debug for ErrorProbe<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorProbe<{}>", std::any::type_name::<E>())
    }
}

/// How an error is described and carried, as auto-ref picked it.
#[doc(hidden)]
pub struct ErrorCodec<E> {
    describe: fn(&E) -> ErrorReport,
    encode: fn(&E) -> Option<Vec<u8>>,
    decode: fn(&[u8]) -> Option<E>,
}

impl<E> fmt::Debug for ErrorCodec<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCodec<{}>", std::any::type_name::<E>())
    }
}

impl<E> ErrorCodec<E> {
    /// The crossing form of `error`.
    pub fn to_wire(&self, error: &E) -> Returned {
        Returned {
            report: (self.describe)(error),
            typed: (self.encode)(error),
        }
    }

    /// The error back, as itself where it travelled so, else its report.
    pub fn from_wire(&self, wire: Returned) -> Result<E, JobError> {
        match wire.typed.as_deref().and_then(self.decode) {
            Some(error) => Ok(error),
            None => Err(JobError::Returned(Box::new(wire.report))),
        }
    }
}

/// `E`'s description: chosen by the first of these `E` implements.
#[doc(hidden)]
pub mod describe {
    use super::*;

    /// An error: its message and its chain of sources.
    pub trait AsError<E> {
        /// Describes `E`.
        fn describe(&self) -> fn(&E) -> ErrorReport;
    }
    impl<E: Error> AsError<E> for &&&&ErrorProbe<E> {
        fn describe(&self) -> fn(&E) -> ErrorReport {
            |e| ErrorReport::of(e)
        }
    }

    /// A type that holds an error without being one (`anyhow::Error`,
    /// `Box<dyn Error + Send + Sync>`): the held error's message and chain.
    pub trait AsDynError<E> {
        /// Describes `E`.
        fn describe(&self) -> fn(&E) -> ErrorReport;
    }
    impl<E: AsRef<dyn Error + Send + Sync + 'static>> AsDynError<E> for &&&ErrorProbe<E> {
        fn describe(&self) -> fn(&E) -> ErrorReport {
            |e| {
                let mut report = ErrorReport::of(e.as_ref());
                report.type_name = std::any::type_name::<E>().to_owned();
                report
            }
        }
    }

    /// A `Display` type (a `String`, say): its text.
    pub trait AsDisplay<E> {
        /// Describes `E`.
        fn describe(&self) -> fn(&E) -> ErrorReport;
    }
    impl<E: fmt::Display> AsDisplay<E> for &&ErrorProbe<E> {
        fn describe(&self) -> fn(&E) -> ErrorReport {
            |e| ErrorReport::message_only(std::any::type_name::<E>(), e.to_string())
        }
    }

    /// A `Debug` type: its debug form.
    pub trait AsDebug<E> {
        /// Describes `E`.
        fn describe(&self) -> fn(&E) -> ErrorReport;
    }
    impl<E: fmt::Debug> AsDebug<E> for &ErrorProbe<E> {
        fn describe(&self) -> fn(&E) -> ErrorReport {
            |e| ErrorReport::message_only(std::any::type_name::<E>(), format!("{e:?}"))
        }
    }

    /// Anything else: its type's name.
    pub trait AsAny<E> {
        /// Describes `E`.
        fn describe(&self) -> fn(&E) -> ErrorReport;
    }
    impl<E> AsAny<E> for ErrorProbe<E> {
        fn describe(&self) -> fn(&E) -> ErrorReport {
            |_| {
                let name = std::any::type_name::<E>();
                ErrorReport::message_only(name, format!("an error of type {name}"))
            }
        }
    }
}

/// How `E` travels as itself, if it can: its encoder and decoder.
#[doc(hidden)]
pub type Carry<E> = (fn(&E) -> Option<Vec<u8>>, fn(&[u8]) -> Option<E>);

/// Whether `E` can travel as itself: chosen by the first of these `E`
/// implements.
#[doc(hidden)]
pub mod carry {
    use super::*;

    /// A serde type travels as itself.
    pub trait BySerde<E> {
        /// Encodes and decodes `E`, if it can travel.
        fn carry(&self) -> Carry<E>;
    }
    impl<E: Serialize + DeserializeOwned> BySerde<E> for &&ErrorProbe<E> {
        fn carry(&self) -> Carry<E> {
            (wire::encode::<E>, wire::decode::<E>)
        }
    }

    /// An error parpool knows how to rebuild (`std::io::Error`).
    pub trait ByRevive<E> {
        /// Encodes and decodes `E`, if it can travel.
        fn carry(&self) -> Carry<E>;
    }
    impl<E: Revive> ByRevive<E> for &ErrorProbe<E> {
        fn carry(&self) -> Carry<E> {
            (
                |e| wire::encode(&e.to_parts()),
                |b| wire::decode(b).map(E::from_parts),
            )
        }
    }

    /// Anything else travels as its report only.
    pub trait ByReport<E> {
        /// Encodes and decodes `E`, if it can travel.
        fn carry(&self) -> Carry<E>;
    }
    impl<E> ByReport<E> for ErrorProbe<E> {
        fn carry(&self) -> Carry<E> {
            (|_| None, |_| None)
        }
    }
}

/// The codec for `E`, from what the probes picked.
#[doc(hidden)]
pub const fn error_codec<E>(
    describe: fn(&E) -> ErrorReport,
    (encode, decode): Carry<E>,
) -> ErrorCodec<E> {
    ErrorCodec {
        describe,
        encode,
        decode,
    }
}

/// An error type that is not serde but that parpool rebuilds on the other
/// side from parts that are.
#[doc(hidden)]
pub trait Revive: Sized {
    /// What travels.
    type Parts: Serialize + DeserializeOwned;
    /// The parts of `self`.
    fn to_parts(&self) -> Self::Parts;
    /// `Self` again.
    fn from_parts(parts: Self::Parts) -> Self;
}

/// An `io::Error` travels as its OS error code where it has one (so it is
/// the same error, message included), else as its kind and message.
impl Revive for std::io::Error {
    type Parts = (Option<i32>, u8, String);

    fn to_parts(&self) -> Self::Parts {
        let kind = IO_KINDS
            .iter()
            .position(|&k| k == self.kind())
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX);
        (self.raw_os_error(), kind, self.to_string())
    }

    fn from_parts((code, kind, message): Self::Parts) -> Self {
        match code {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => {
                let kind = IO_KINDS
                    .get(usize::from(kind))
                    .copied()
                    .unwrap_or(std::io::ErrorKind::Other);
                std::io::Error::new(kind, message)
            }
        }
    }
}

/// The `io::ErrorKind`s that travel by name; any other arrives as `Other`
/// (with its message).
const IO_KINDS: &[std::io::ErrorKind] = {
    use std::io::ErrorKind::*;
    &[
        NotFound,
        PermissionDenied,
        ConnectionRefused,
        ConnectionReset,
        ConnectionAborted,
        NotConnected,
        AddrInUse,
        AddrNotAvailable,
        BrokenPipe,
        AlreadyExists,
        WouldBlock,
        InvalidInput,
        InvalidData,
        TimedOut,
        WriteZero,
        Interrupted,
        Unsupported,
        UnexpectedEof,
        OutOfMemory,
        Other,
    ]
};

/// The bytes an error that travels as itself is written in.
mod wire {
    use super::*;

    #[cfg(all(feature = "process", target_os = "linux"))]
    pub(super) fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
        crate::panic::catch(|| postcard::to_allocvec(value).ok())
            .ok()
            .flatten()
    }

    #[cfg(all(feature = "process", target_os = "linux"))]
    pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
        crate::panic::catch(|| postcard::from_bytes(bytes).ok())
            .ok()
            .flatten()
    }

    // Without worker processes nothing crosses: an error stays as it is.
    #[cfg(not(all(feature = "process", target_os = "linux")))]
    pub(super) fn encode<T: Serialize>(_: &T) -> Option<Vec<u8>> {
        None
    }

    #[cfg(not(all(feature = "process", target_os = "linux")))]
    pub(super) fn decode<T: DeserializeOwned>(_: &[u8]) -> Option<T> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the config")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_report_keeps_the_message_the_type_and_every_source() {
        let err = Outer(std::io::Error::other("disk on fire"));
        let report = ErrorReport::of(&err);
        assert_eq!(report.message(), "reading the config");
        assert!(
            report.type_name().ends_with("Outer"),
            "{}",
            report.type_name()
        );
        assert_eq!(report.full_message(), "reading the config: disk on fire");
        let source = report.source().expect("a source");
        assert_eq!(source.to_string(), "disk on fire");
        assert_eq!(report.chain().count(), 2);
    }

    #[test]
    fn io_errors_are_rebuilt_with_their_code_or_kind() {
        let by_code = std::io::Error::from_raw_os_error(2);
        let back = std::io::Error::from_parts(by_code.to_parts());
        assert_eq!(back.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(back.to_string(), by_code.to_string());
        let by_kind = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad header");
        let back = std::io::Error::from_parts(by_kind.to_parts());
        assert_eq!(back.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(back.to_string(), "bad header");
    }
}
