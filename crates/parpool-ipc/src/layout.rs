//! How a shared-memory object writes down where its parts sit: a
//! `#[repr(C)]` struct whose fields are the parts, in order, never built;
//! the offsets come from it ([`shared_layout!`]), so none is numbered by
//! hand, and the compiler checks that each part is aligned for the word
//! it is read as and that the layout still is the format other processes
//! read.

/// Pads and aligns `T` to a cache line of its own, so that what one side
/// writes does not share a line with what the other side reads.
#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

/// The bytes of a robust lock, on a cache line of its own.
pub(crate) type LockLine = Line<[u8; crate::sys::MUTEX_SIZE]>;

/// Declares `const NAME: usize` for the offset of each field of a layout
/// struct within a region's payload, and checks at compile time that the
/// payload's start is aligned enough for the struct and that each offset
/// is the one the format fixes (`= at`), so that a change to the struct
/// that would move a part other processes read fails the build.
///
/// ```ignore
/// #[repr(C)]
/// struct Layout { lock: LockLine, count: AtomicU32 }
/// shared_layout!(Layout { LOCK = lock @ 0, COUNT = count @ 64 });
/// ```
macro_rules! shared_layout {
    ($layout:ident { $($(#[$doc:meta])* $name:ident = $field:ident @ $at:literal),* $(,)? }) => {
        $(
            $(#[$doc])*
            const $name: usize = ::core::mem::offset_of!($layout, $field);
            const _: () = assert!($name == $at, "a part of a shared-memory format moved");
        )*
        const _: () = assert!(
            $crate::region::HEADER.is_multiple_of(::core::mem::align_of::<$layout>()),
            "a region's payload is not aligned for this layout",
        );
    };
}
