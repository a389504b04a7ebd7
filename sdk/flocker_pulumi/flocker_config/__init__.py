"""Loader for Flocker's configuration files: application.yml (Flocker or Fig format)
and deployment.yml, into the provider's value models.

Pure library: no Pulumi, no Docker. Every problem raises one ``ConfigError``.
"""

from .configuration import Configuration, ConfiguredApplication
from .errors import ConfigError
from .image_names import ImageName, parse_image_name
from .loader import load_application_config, load_configuration
from .sizes import parse_size

__all__ = [
    "ConfigError",
    "Configuration",
    "ConfiguredApplication",
    "ImageName",
    "load_application_config",
    "load_configuration",
    "parse_image_name",
    "parse_size",
]
