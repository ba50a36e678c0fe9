"""The data package's errors: each a :class:`stablecnn.errors.DataError`, so callers may catch that.

- :class:`IdxError`: an IDX file is malformed (wrong magic, bad dimensions, truncated payload,
  trailing bytes, image and label counts that differ, a label out of range).
- :class:`ArchiveError`: a dataset archive (CIFAR-10's tar of records) is malformed, truncated or
  hostile (a link, an absolute or ``..`` path, a member of the wrong size).
- :class:`ChecksumError`: bytes do not match their pinned SHA-256 digest.
- :class:`SourceError`: a source (user folder, mirror, offline fallback) cannot serve the files.
"""

from stablecnn.errors import ArchiveError, ChecksumError, DataError, IdxError, SourceError

# defined in stablecnn.errors
__all__ = ["DataError", "IdxError", "ArchiveError", "ChecksumError", "SourceError"]
