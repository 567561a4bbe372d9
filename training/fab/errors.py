"""The one error type of fabrication campaigns, so the CLI reports each in one line."""

from xbar.training.errors import XbarError


class FabError(XbarError, ValueError):
    """A campaign input or step that cannot be used; the message says what and where."""
