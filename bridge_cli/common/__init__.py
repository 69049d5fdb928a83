"""Helpers both engine/ and store/ use: redaction, the Store protocol, record codecs.

Nothing here imports engine/, store/, proxy/, control/, cli/ or tui/, nor any I/O library.
"""
