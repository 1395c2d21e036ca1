"""mirror: an archive integrity and mirroring daemon.

Importing the package configures nothing and opens nothing.
"""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/mirror-archive/mirror"
