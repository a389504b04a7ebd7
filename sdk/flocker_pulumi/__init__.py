"""flocker-pulumi: Flocker's applications and movable volumes as Pulumi resources."""

from .declare import declare_configuration
from .resources import FlockerApplication, FlockerVolume

__all__ = ["FlockerApplication", "FlockerVolume", "declare_configuration"]
