"""One error type for users, with one named subclass per way an input can be wrong.

The CLI prints any CaregError as a single line and exits non-zero; messages
name the file or argument and say what to do.
"""


class CaregError(Exception):
    """Base of every error careg-edge raises on purpose (C++ core included)."""


class UserInputError(CaregError):
    """A path, image, option or array the user gave is unusable."""


class FormatError(CaregError):
    """A file careg-edge wrote (profile, checkpoint, engine sidecar) is unreadable."""


class TruncatedFile(FormatError):
    pass


class BadHeader(FormatError):
    pass


class ChecksumMismatch(FormatError):
    pass


class WrongKind(FormatError):
    pass


class VersionMismatch(FormatError):
    pass


class EncoderMismatch(CaregError):
    """A profile or engine was made with another encoder than the one loaded."""


class MissingDependency(CaregError):
    """An optional extra (torch, tensorrt, faiss) is needed for this call."""
