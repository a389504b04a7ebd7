"""flocker-pulumi: Flocker's applications and movable volumes as Pulumi resources."""

from .resources import FlockerApplication, FlockerVolume

__all__ = ["FlockerApplication", "FlockerVolume"]
