"""The `xbar` command line: one module per command (its parser and its run), the entry
point and the error handling in `main`."""
