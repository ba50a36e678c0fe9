"""The data package's errors: each a :class:`stablecnn.errors.DataError`, so callers may catch that.

- :class:`IdxError`: an IDX file is malformed (wrong magic, bad dimensions, truncated payload,
  trailing bytes, image and label counts that differ, a label out of range).
- :class:`ChecksumError`: bytes do not match their pinned SHA-256 digest.
- :class:`SourceError`: a source (user folder, mirror, offline fallback) cannot serve the files.
"""

from stablecnn.errors import ChecksumError, DataError, IdxError, SourceError

__all__ = ["DataError", "IdxError", "ChecksumError", "SourceError"]  # defined in stablecnn.errors
