//! Content digests (OCI image-spec, "Descriptors" § "Digests") and a hashing reader.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// The only algorithm accepted, with its separator.
const PREFIX: &str = "sha256:";
/// Length of a sha256 digest's encoded part.
const HEX_LEN: usize = 64;

/// A content digest, `sha256:` followed by 64 lowercase hexadecimal digits.
///
/// The OCI image-spec ("Descriptors" § "Digests") allows other algorithms and registers
/// `sha512`; only `sha256` is accepted here, in its canonical lowercase form (the spec's
/// registered pattern is `[a-f0-9]{64}`). A `Digest` names files: `blobs/sha256/<hex>` in an
/// image layout and a layer's directory in the [`LayerStore`](crate::LayerStore), so anything
/// that is not exactly that form is refused with [`Error::InvalidDigest`] — this is what keeps
/// a crafted digest such as `sha256:../../etc` from becoming a path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates `sha256:<64 lowercase hex digits>`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDigest`] for another algorithm, a wrong length, or any character that is
    /// not a lowercase hexadecimal digit.
    pub fn parse(value: &str) -> Result<Digest> {
        let invalid = |reason| Error::InvalidDigest {
            value: value.to_owned(),
            reason,
        };
        let Some((algorithm, hex)) = value.split_once(':') else {
            return Err(invalid("expected <algorithm>:<hex>"));
        };
        if algorithm != "sha256" {
            return Err(invalid("only the sha256 algorithm is supported"));
        }
        if hex.len() != HEX_LEN {
            return Err(invalid("a sha256 digest has 64 hexadecimal digits"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(
                "a sha256 digest has only lowercase hexadecimal digits",
            ));
        }
        Ok(Digest(value.to_owned()))
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(data).into())
    }

    /// The digest whose hash is the 32 bytes of a sha256 sum.
    pub fn from_sha256(sum: [u8; 32]) -> Digest {
        use fmt::Write as _;
        let mut s = String::with_capacity(PREFIX.len() + HEX_LEN);
        s.push_str(PREFIX);
        for byte in sum {
            // Writing to a String cannot fail.
            let _ = write!(s, "{byte:02x}");
        }
        Digest(s)
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The algorithm, always `"sha256"`.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The 64 hexadecimal digits (the "encoded" part): safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A reader that hashes (sha256) and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (so that the digest covers all of it).
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// The digest and length of what was read, and the inner reader.
    pub(crate) fn finish(self) -> (Digest, u64, R) {
        (
            Digest::from_sha256(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        // `n <= buf.len()` by the `Read` contract; `get` keeps a broken reader from panicking.
        if let Some(data) = buf.get(..n) {
            self.hasher.update(data);
        }
        self.count += n as u64;
        Ok(n)
    }
}
