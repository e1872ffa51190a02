"""The shipped templates/ and config/, inside the package so an installed wheel has them too.

In the repository these are symlinks to the top-level folders; building a wheel copies the
files (setuptools follows the links), so `streamer dev` works from any directory.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
EXAMPLE_CONFIG = HERE / "config" / "streamer.example.yaml"
