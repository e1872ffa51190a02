"""The stand-in's sample users (streamer/devkit/sample_users.json) tests refer to."""

ANA = "auth0|65f0c0ffee0000000000a001"  # fr-CA, unverified
ANA_EMAIL = "ana.silva@example.com"
BRUNO = "google-oauth2|104203384937812345678"  # social, verified
CHLOE = "auth0|65f0c0ffee0000000000c003"
