"""Exception types of the contract."""


class PricefeedError(Exception):
    """Base class of every error raised by pricefeed code."""


class CodecError(PricefeedError):
    """A payload on the wire (or in the cache) is not a valid pricefeed message."""


class SettingsError(PricefeedError):
    """An environment variable holds an invalid value; the message names the variable."""
