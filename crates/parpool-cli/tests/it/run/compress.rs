//! `--compress`: output spooled to temporary files goes through a
//! compressor and comes back the same.

use super::*;

/// Output past the in-memory threshold comes back byte for byte through
/// the default compressor and through given programs (which are run); a
/// compressor that fails is an error, not lost output passed as success.
#[test]
fn compressed_spooled_output_comes_back_the_same() {
    let dir = scratch("compress");
    let expected: String = (1..=500_000)
        .map(|i| format!("{i}\n"))
        .chain((1..=300).map(|i| format!("{i}\n")))
        .collect();
    let o = run(&["--compress", "-k", "seq {}", ":::", "500000", "300"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        o.stdout == expected.as_bytes(),
        "--compress changed the output"
    );
    let (c, d) = (dir.join("compressed"), dir.join("decompressed"));
    let compress = format!("touch {}; gzip -c -1", c.display());
    let decompress = format!("touch {}; gzip -dc", d.display());
    let o = run(&[
        "--compress-program",
        &compress,
        "--decompress-program",
        &decompress,
        "-k",
        "seq {}",
        ":::",
        "500000",
        "300",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout == expected.as_bytes());
    assert!(c.exists() && d.exists(), "the given programs were not used");
    // A given compressor reads back with its own `-dc`, as GNU parallel's.
    let o = run(&[
        "--compress-program",
        "gzip -c -1",
        "-k",
        "seq {}",
        ":::",
        "500000",
        "300",
    ]);
    assert!(o.stdout == expected.as_bytes());
    let o = run(&["--compress-program", "false", "seq {}", ":::", "500000"]);
    assert_ne!(o.status.code(), Some(0));
}
