"""The one error type of fabrication campaigns, so the CLI reports each in one line."""


class FabError(ValueError):
    """A campaign input or step that cannot be used; the message says what and where."""
