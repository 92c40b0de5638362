"""hierfl's exceptions, and the one translator from script error replies into them."""

from __future__ import annotations

from hierfl.protocol import ErrorCode


class HierflError(Exception):
    """Base class: every error hierfl raises on purpose has a message meant for a person."""


class BadInput(HierflError):
    """A job sheet, name, option or argument is malformed; nothing was changed."""


class RedisUnavailable(HierflError):
    """The Redis server cannot be reached or is not usable for hierfl."""


class IntegrityError(HierflError):
    """Stored bytes do not match their digest, or parameters are malformed."""


class BlobGone(IntegrityError):
    """No blob is stored under a digest: the scripts retired it once no live round named it
    (the reader's round is over), or it was never stored."""


class ScriptError(HierflError):
    """A Lua script refused an operation; `code` is an `ErrorCode`. Nothing was changed."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.detail = message


class IllegalTransition(ScriptError):
    pass


class StaleGeneration(ScriptError):
    pass


class NotYet(ScriptError):
    """A deadline has not passed yet."""


class UnknownJob(ScriptError):
    pass


class JobExists(ScriptError):
    pass


_BY_CODE: dict[ErrorCode, type[ScriptError]] = {
    ErrorCode.ILLEGAL_TRANSITION: IllegalTransition,
    ErrorCode.STALE_GENERATION: StaleGeneration,
    ErrorCode.UNKNOWN_JOB: UnknownJob,
    ErrorCode.UNKNOWN_CLUSTER: UnknownJob,
    ErrorCode.UNKNOWN_NODE: UnknownJob,
    ErrorCode.JOB_EXISTS: JobExists,
    ErrorCode.NOT_YET: NotYet,
}


def from_script_reply(text: str) -> HierflError | None:
    """Translate a script's error reply (``CODE message``) into an exception, if it is ours."""
    code_text, _, message = text.partition(" ")
    try:
        code = ErrorCode(code_text)
    except ValueError:
        return None
    return _BY_CODE.get(code, ScriptError)(code, message)
