"""streamer: send your own Auth0 identity emails from Auth0 log events."""

__version__ = "0.1.0"
