//! [`Descriptor`]: any open file descriptor (a pipe end, a socket, a file),
//! sent to a process job as a duplicate of its own.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::transfer::{self, ShareFd};

/// An open file descriptor that crosses into a process job's input or
/// output: the receiver gets a duplicate of its own (through the pool's
/// side channel, as `ipc` objects' memory does), referring to the same
/// open pipe, socket or file. Outside a job's input or output it refuses
/// to serialize.
///
/// It is how `multiprocessing` objects built on pipes reach parpool's
/// Python workers, and how a Rust task can be handed a socket.
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::fd::OwnedFd;
///
/// use parpool::ipc::Descriptor;
/// use parpool::{Executor, ProcessPool};
///
/// parpool::task! {
///     /// Writes a greeting into the descriptor it was given.
///     fn greet(out: Descriptor) -> () {
///         let mut pipe = std::fs::File::from(out.take().unwrap());
///         pipe.write_all(b"hello").unwrap();
///     }
/// }
///
/// let (mut reader, writer) = std::io::pipe()?;
/// let pool = ProcessPool::builder().workers(1).build()?;
/// pool.submit(greet, Descriptor::new(OwnedFd::from(writer))).join()?;
/// let mut got = [0; 5];
/// reader.read_exact(&mut got)?;
/// assert_eq!(&got, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Descriptor {
    fd: Arc<Mutex<Option<OwnedFd>>>,
}

/// What travels: the descriptor, kept open while it is in transit.
struct Sent(OwnedFd);

impl ShareFd for Sent {
    fn share_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Descriptor {
    /// Wraps `fd`, which it owns from now on (its clones share it).
    pub fn new(fd: OwnedFd) -> Self {
        Descriptor {
            fd: Arc::new(Mutex::new(Some(fd))),
        }
    }

    /// Wraps a duplicate of `fd`: the caller keeps its own.
    ///
    /// # Errors
    /// When the system refuses the duplicate (out of descriptors).
    pub fn duplicate(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Descriptor::new(fd.try_clone_to_owned()?))
    }

    /// The raw descriptor number, while this (and its clones) still own it.
    pub fn as_raw_fd(&self) -> Option<RawFd> {
        crate::lock(&self.fd).as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Takes the descriptor out, for the caller to own; `None` if it was
    /// taken already (by this handle or a clone).
    pub fn take(&self) -> Option<OwnedFd> {
        crate::lock(&self.fd).take()
    }

    /// Takes the descriptor out as a raw number the caller must close;
    /// `None` if it was taken already.
    pub fn into_raw_fd(self) -> Option<RawFd> {
        self.take().map(IntoRawFd::into_raw_fd)
    }
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Descriptor").field(&self.as_raw_fd()).finish()
    }
}

impl Serialize for Descriptor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let copy = match crate::lock(&self.fd).as_ref() {
            Some(fd) => fd.try_clone().map_err(S::Error::custom)?,
            None => return Err(S::Error::custom("the Descriptor was taken out already")),
        };
        match transfer::send_descriptor(Arc::new(Sent(copy))) {
            Some(index) => index.serialize(s),
            None => Err(S::Error::custom(transfer::refuse(
                "a Descriptor can only be sent in the input or output of a parpool job".into(),
                "Descriptor",
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Descriptor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(d)?;
        let fd = transfer::take_descriptor(index).ok_or_else(|| {
            transfer::fail::<D::Error>(format!(
                "the Descriptor (descriptor #{index}) did not arrive with the message"
            ))
        })?;
        Ok(Descriptor::new(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_job_it_refuses_to_serialize_and_is_taken_once() {
        let (_reader, writer) = std::io::pipe().unwrap();
        let d = Descriptor::new(OwnedFd::from(writer));
        let text = postcard::to_allocvec(&d).unwrap_err().to_string();
        assert!(!text.is_empty());
        let clone = d.clone();
        assert!(clone.take().is_some());
        assert!(d.take().is_none(), "clones share one descriptor");
        assert!(d.as_raw_fd().is_none());
    }

    #[test]
    fn inside_a_window_it_crosses_as_a_duplicate() {
        use std::io::{Read, Write};
        let (mut reader, writer) = std::io::pipe().unwrap();
        let d = Descriptor::new(OwnedFd::from(writer));
        let (bytes, shared) = transfer::collecting(|| postcard::to_allocvec(&d).unwrap());
        let fds: Vec<OwnedFd> = shared
            .iter()
            .map(|o| o.share_fd().try_clone_to_owned().unwrap())
            .collect();
        drop(shared);
        let got: Descriptor =
            transfer::receiving(fds, || postcard::from_bytes(&bytes).unwrap());
        assert_ne!(got.as_raw_fd(), d.as_raw_fd());
        std::fs::File::from(got.take().unwrap())
            .write_all(b"x")
            .unwrap();
        let mut buf = [0; 1];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }
}
